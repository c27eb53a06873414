"""Whether the result backend the worker stores results in can be reached, checked at start and then
every RECHECK_SECONDS, and reported rather than refused.

An app's own `result_backend` often names a server that exists only on its author's machine
(`backend="redis"`: localhost inside the Pod). Celery does not look at it before the first task: every
task then runs, fails to store its result, and its caller's `.get()` waits in vain. The worker does not
refuse to start over it (tasks whose results nobody reads still do their work, and a backend that starts
after the workers would otherwise cost them a crash-loop back-off): it logs the problem, and writes it next
to its heartbeat in the broker (`contract.result_backend_key`) so the operator's status says it
(condition `ResultBackendReady`); a task whose result could not be stored is dead-lettered as
`result-not-stored` (`deadletter.ResultNotStored`).

The check: a PING for Redis-family backends (the app's own client: its URL, TLS and Sentinel settings and
the worker's socket timeouts); nothing for the disabled backend or rpc:// (its results travel over the
broker, which the consumer already needs); for any other backend one result read of a task id that does
not exist, the cheapest call every backend has.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Callable
from typing import Any, Final

from celery import Celery
from celery.backends.base import DisabledBackend
from celery.backends.redis import RedisBackend
from celery.backends.rpc import RPCBackend

from jobqueue_worker.app import ResultBackendOrigin

logger = logging.getLogger(__name__)

RECHECK_SECONDS: Final = 30.0
"""How often the check runs again: a backend that comes up later clears the report within this."""
CHECK_TIMEOUT_SECONDS: Final = 15.0
"""A check still waiting after this long is a backend that does not answer (above the Redis socket
timeouts the worker sets, 5 s to connect and 10 s per command, so a Redis error is reported as itself)."""

FIXES: Final[dict[ResultBackendOrigin, str]] = {
    "app": (
        "point the app's result_backend at a Redis the workers can reach, or set the JobQueue's "
        "spec.results.backendSecretRef (it overrides the app's)"
    ),
    "jobqueue": (
        "fix the URL in the Secret of the JobQueue's spec.results.backendSecretRef, or make that server reachable"
    ),
    "broker": "the result backend is the broker's Redis: make it reachable from the workers",
}


def location(backend: Any) -> str:
    """The backend's URL without its password (`redis://:**@host:6379/0`); for `backend="redis"`, which has
    no URL, the host, port and database Celery falls back to."""
    uri = str(backend.as_uri() or "")
    if uri.endswith("://") or not uri:
        params = getattr(backend, "connparams", None) or {}
        if "host" in params:
            return f"redis://{params['host']}:{params.get('port', 6379)}/{params.get('db', 0)}"
        return uri or type(backend).__name__
    return uri


def check(backend: Any) -> None:
    """One cheap round trip to the backend; raises what the backend raises when it cannot be reached."""
    if isinstance(backend, DisabledBackend | RPCBackend):
        return
    if isinstance(backend, RedisBackend):
        backend.client.ping()
        return
    backend.get_task_meta(f"jobqueue-check-{uuid.uuid4().hex}", cache=False)


def problem(backend: Any, origin: ResultBackendOrigin, timeout: float = CHECK_TIMEOUT_SECONDS) -> str | None:
    """What is wrong with the backend, as one line naming its URL and the fix; None when it answers within
    `timeout` (the check runs in a thread of its own, left behind if it hangs)."""
    failures: list[BaseException] = []
    answered = threading.Event()

    def run() -> None:
        try:
            check(backend)
        except Exception as exc:  # any backend, any client library: whatever it raises means "not reachable"
            failures.append(exc)
        answered.set()

    threading.Thread(target=run, name="jobqueue-result-check-call", daemon=True).start()
    if not answered.wait(timeout):
        text = f"no answer within {timeout:g} s"
    elif failures:
        text = " ".join(f"{type(failures[0]).__name__}: {failures[0]}".split())
    else:
        return None
    return (
        f"the result backend {location(backend)} cannot be reached ({text}): tasks run but their results "
        f"are not stored (dead-lettered as result-not-stored); {FIXES[origin]}"
    )


class Checker:
    """Runs `problem` at start and every `interval` in a daemon thread; calls `report` with each change."""

    def __init__(
        self,
        app: Celery,
        origin: ResultBackendOrigin,
        report: Callable[[str | None], None],
        interval: float = RECHECK_SECONDS,
    ) -> None:
        self._app, self._origin, self._report, self._interval = app, origin, report, interval
        self._stop = threading.Event()
        self._last: str | None = None

    def start(self) -> None:
        threading.Thread(target=self._run, name="jobqueue-result-check", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def once(self) -> str | None:
        """Check now (the app's backend of this thread); log and report a change."""
        found = problem(self._app.backend, self._origin)
        if found is not None and found != self._last:
            logger.error("%s", found)
        elif found is None and self._last is not None:
            logger.warning("the result backend %s answers again", location(self._app.backend))
        if found != self._last:
            self._report(found)
        self._last = found
        return found

    def _run(self) -> None:
        while True:
            try:
                self.once()
            except Exception:  # never let a check end the thread: the next one may work
                logger.exception("checking the result backend failed")
            if self._stop.wait(self._interval):
                return
