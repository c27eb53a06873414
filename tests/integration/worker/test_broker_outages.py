"""The worker against a Redis that is not there yet, or not there any more: it must neither hang
waiting for a connection nor hang on its way out.

"Not there" is the hard case of Kubernetes: connecting to a Service whose Redis Pod is not (or no
longer) running is not refused, it hangs (`conftest.blackhole`).
"""

from __future__ import annotations

import signal
import uuid

import pytest

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer
from tests.integration.worker.conftest import StartWorker, blackhole


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """A Redis of the test's own, not started yet: the test decides when it comes and goes."""
    return RedisServer(tmp_path_factory.mktemp("redis-own"))


def test_a_worker_started_before_redis_is_ready_soon_after_redis_is_up(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    with blackhole(own_redis.port):
        worker = start_worker(f"q-{uuid.uuid4().hex[:8]}", redis_url=own_redis.url, wait=False)
        # A connection attempt that hangs must give up and be retried, not block the worker for minutes.
        wait_until(lambda: "Cannot connect" in worker.output(), timeout=30, what=f"a failed attempt ({worker.log})")
        assert worker.get("/readyz").status_code == 503
    try:
        own_redis.start()  # same port and password the worker was given
        worker.wait_ready(timeout=45)
    finally:
        own_redis.stop()


def test_sigterm_ends_an_idle_worker_promptly_when_redis_is_gone(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    own_redis.start()
    try:
        queue = f"q-{uuid.uuid4().hex[:8]}"
        worker = start_worker(queue, redis_url=own_redis.url, JOBQUEUE_CONCURRENCY="2")
        sender = producer.producer_app(own_redis.url)
        try:  # the pool children have run tasks (and recorded them) before Redis goes away
            for result in producer.send(sender, queue, "noop", 4):
                result.get(timeout=30)
        finally:
            sender.close()
    finally:
        own_redis.stop()
    with blackhole(own_redis.port):
        wait_until(lambda: worker.get("/readyz").status_code == 503, timeout=30, what="not ready without Redis")
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: worker.proc.poll() is not None, timeout=30, what=f"the worker gone ({worker.log})")


def test_sigterm_ends_an_idle_worker_when_redis_stops_answering(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    """A Redis that keeps its connections open but never answers (a frozen process, a vanished peer).

    Every command of the shutdown then waits for the socket timeout, so the exit is slower than above,
    but it comes: before, the heartbeat retried for ever and the worker waited for the SIGKILL."""
    own_redis.start()
    try:
        worker = start_worker(f"q-{uuid.uuid4().hex[:8]}", redis_url=own_redis.url, JOBQUEUE_CONCURRENCY="2")
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            worker.proc.send_signal(signal.SIGTERM)
            # 47-59 s on an idle machine (Celery's own shutdown waits out several socket timeouts in turn), over
            # 90 s once under a loaded CI run: the promise is that it ends by itself, not how fast.
            gone = f"the worker gone ({worker.log})"
            wait_until(lambda: worker.proc.poll() is not None, timeout=200, what=gone)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
    finally:
        own_redis.stop()
