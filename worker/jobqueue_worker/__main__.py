"""`jobqueue-worker`: start a Celery worker for one queue from the environment the operator sets.

`jobqueue-worker` runs the worker (the container's command); `jobqueue-worker send ...` is the small
producer of built-in tasks (see `jobqueue_worker.producer`); `jobqueue-worker beat ...` is Celery beat on the
JobQueue's broker (`jobqueue_worker.beat`). Configuration errors print one line and
exit 2. The worker runs in this process (no child `celery` command), so SIGTERM reaches Celery's
warm-shutdown handler directly.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

# Only the standard library at import time: `main` must install its SIGTERM handler within moments of the
# process starting (see `_exit_on_early_sigterm`); the rest (pydantic, Celery) is imported after it.
if TYPE_CHECKING:
    from jobqueue_worker.settings import Pool, WorkerSettings

EXIT_CONFIG = 2
METRICS_ADDRESS = "0.0.0.0"  # every interface of the Pod: the kubelet probes the Pod IP, port-forward uses localhost
PROG = "jobqueue-worker"


def _patch_concurrency(pool: Pool) -> None:
    """gevent/eventlet must monkey-patch before anything else imports sockets, as `celery worker` does."""
    from jobqueue_worker.contract import Env
    from jobqueue_worker.settings import Pool, SettingsError

    if pool not in (Pool.GEVENT, Pool.EVENTLET):
        return
    import celery

    try:
        celery.maybe_patch_concurrency(["-P", pool.value])
    except ImportError as exc:
        raise SettingsError(f"{Env.POOL}={pool.value!r}: the {pool.value} package is not installed ({exc})") from None


def run_worker(settings: WorkerSettings) -> int:
    """Configure the app, start the HTTP server, run the worker until it shuts down; return its exit code."""
    from jobqueue_worker import metricsdir

    _patch_concurrency(settings.pool)
    with metricsdir.private_directory() as metrics_dir:
        # prometheus-client picks its multiprocess mode when first imported: set the directory before that.
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(metrics_dir)
        return _run(settings)


def _run(settings: WorkerSettings) -> int:
    """The worker proper, once the metrics directory is set."""
    from jobqueue_worker import app as app_module
    from jobqueue_worker import (
        completions,
        deadletter,
        failover,
        heartbeat,
        incarnation,
        metrics,
        patches,
        probes,
        resultcheck,
        server,
        shutdown,
    )
    from jobqueue_worker.contract import Env
    from jobqueue_worker.settings import SettingsError

    app = app_module.load_app(settings.app)
    origin = app_module.configure(app, settings)
    probes.install(app)
    heartbeat.install()
    registry = metrics.install(settings)
    completions.Completions(settings.queue, settings.key_prefix).connect()
    deadletter.install(app, settings)
    patches.install()
    shutdown.install(app, settings.soft_shutdown_timeout_seconds, settings.pool)
    try:
        http = server.serve(METRICS_ADDRESS, settings.metrics_port, server.wsgi_app(registry, probes.HEALTH))
    except OSError as exc:
        where = f"{METRICS_ADDRESS}:{settings.metrics_port}"
        message = f"{Env.METRICS_PORT}={settings.metrics_port}: cannot listen on {where}: {exc}"
        raise SettingsError(message) from None
    this = incarnation.Incarnation(app, settings)
    checker = resultcheck.Checker(app, origin, this.report_result_backend)
    checker.start()
    this.start()
    watch = failover.install(app)  # sentinel:// only: follow a failover at once (celery/celery#6348)
    try:
        worker = app.Worker(hostname=settings.nodename, queues=[settings.queue], loglevel="INFO")
        worker.start()
        return int(worker.exitcode or 0)
    finally:
        if watch is not None:
            watch.stop()
        checker.stop()
        this.end()
        http.shutdown()


def _exit_on_early_sigterm() -> None:
    """Until Celery installs its SIGTERM handler (warm shutdown), SIGTERM ends the worker at once.

    Under the image's and the operator's command (`contract.WORKER_COMMAND`) dumb-init is PID 1 and SIGTERM's
    default action would end the worker anyway. Started as PID 1 itself (a command of one's own), the worker
    gets no default action: the kernel drops a signal that has no handler, so a Pod deleted while its worker
    starts would wait out its whole grace period, taking tasks meanwhile. `main` installs this first, before
    any import that takes time; the interpreter's own start (tens of milliseconds) stays uncovered there.
    """
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))


def main(argv: Sequence[str] | None = None) -> int:
    """Console-script entry point."""
    _exit_on_early_sigterm()
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["send"]:
        from jobqueue_worker import producer

        return producer.main(args[1:])
    if args[:1] == ["beat"]:
        from jobqueue_worker import beat

        return beat.main(args[1:])
    if args[:1] in (["deadletter"], ["queue"]):
        from jobqueue_worker import admin

        return admin.main(args)
    from jobqueue_worker.settings import SettingsError, load_settings

    if args:
        print(
            f"{PROG}: takes no arguments (configure it with JOBQUEUE_* variables), or one of: "
            f"{PROG} send --help, {PROG} beat --help, {PROG} deadletter --help, {PROG} queue --help"
        )
        return EXIT_CONFIG
    try:
        return run_worker(load_settings(os.environ))
    except SettingsError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EXIT_CONFIG


if __name__ == "__main__":
    sys.exit(main())
