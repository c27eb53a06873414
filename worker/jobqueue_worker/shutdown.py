"""SIGTERM with a deadline: finish what can end in time, hand the rest back before the kubelet's SIGKILL.

SIGTERM (a scale-down, a rollout, an eviction by `kubectl drain`) starts Celery's warm shutdown: the
worker stops taking tasks at once and exits as soon as its running tasks end. A task that would outlast
the Pod's grace period would be SIGKILLed with it, and its message would wait for the operator to notice
the dead worker. So SIGTERM also arms a timer: `JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS` later (the operator
sets it a few seconds short of the Pod's terminationGracePeriodSeconds, `build/workers.py`), the worker
sends itself SIGQUIT, Celery's documented step from a warm to a cold shutdown: the tasks still running are
cancelled and their messages go back to their queue at once, then the worker exits cleanly (unregistering
its incarnation, so the operator restores nothing twice). A worker whose tasks end in time exits at once,
without waiting for the timer.

What the worker reserved but has not started (prefetched beyond its pool, or waiting for an ETA) goes back
to its queue at once, when the consumer stops taking tasks, not when the worker exits: another worker can
start it now (`GiveBackReserved`).

Only the prefork and threads pools get the deadline: Celery cancels a running task by ending the process
or thread that runs it, and the solo pool (the task runs in the main process, where the signal lands) has
no such thing: SIGQUIT there fails the task instead (`NotImplementedError: ... kill_job`). gevent and
eventlet are untried. With those pools a task that outlasts the grace period is SIGKILLed with the Pod, and
the operator puts its message back once the Pod is gone (docs/worker-contract.md, "Prompt redelivery").

The cold shutdown's own soft wait (`worker_soft_shutdown_timeout`, the same number) is set to 0 first: the
deadline has already been waited for. A SIGQUIT sent by hand still gets the soft wait, as Celery documents.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Final

from celery import Celery, bootsteps
from celery.signals import worker_shutting_down
from celery.worker import state

from jobqueue_worker.settings import Pool

logger = logging.getLogger(__name__)

HAND_BACK_POOLS: Final = frozenset({Pool.PREFORK, Pool.THREADS})
"""The pools whose running tasks a cold shutdown can cancel and requeue."""


class Deadline:
    """The timer one SIGTERM arms (a second SIGTERM leaves it as it is)."""

    def __init__(self, app: Celery, seconds: float) -> None:
        self._app = app
        self._seconds = seconds
        self._timer: threading.Timer | None = None

    def shutting_down(self, sig: str = "", how: str = "", **_: Any) -> None:
        """Celery's `worker_shutting_down` (sent from its signal handler in the main process)."""
        if how != "Warm" or self._timer is not None:
            return
        self._timer = threading.Timer(self._seconds, self.expired)
        self._timer.daemon = True  # a worker whose tasks ended exits without waiting for it
        self._timer.start()

    def expired(self) -> None:
        """The deadline passed with tasks still running: hand them back now (cold shutdown, no soft wait)."""
        logger.warning(
            "shutdown deadline (%gs after SIGTERM) reached: cancelling the running tasks and handing their "
            "messages back to the queue",
            self._seconds,
        )
        self._app.conf.worker_soft_shutdown_timeout = 0
        os.kill(os.getpid(), signal.SIGQUIT)


def written_to_a_process(request: Any) -> bool:
    """Whether the prefork pool has written (or started writing) this request's job to a child: the child
    runs it even though its "accepted" message, which puts it in `state.active_requests`, is read only by the
    event loop that has stopped. Handing such a request back too would run it twice. (Celery keeps the job
    as a weak reference; billiard's job marks the child in `_write_to`, or `_scheduled_for` mid-write.)"""
    reference = getattr(request, "_apply_result", None)
    job = reference() if callable(reference) else None
    return job is not None and bool(getattr(job, "_write_to", None) or getattr(job, "_scheduled_for", None))


class GiveBackReserved(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """A worker step whose `close` (the first thing a warm or cold shutdown does once the event loop has
    stopped, before the pool is joined, with the broker channel still open) rejects, requeued, every request
    the worker holds that no pool process has accepted yet."""

    requires = ("celery.worker.components:Pool",)

    def close(self, worker: Any) -> None:
        waiting = [
            r
            for r in (*state.reserved_requests, *state.scheduled_requests)
            if r not in state.active_requests and not written_to_a_process(r)
        ]
        handed = 0
        for request in waiting:
            if request.acknowledged:
                continue
            try:
                request.reject(requeue=True)
            except Exception:  # the broker's visibility timeout or the operator's restore brings it back later
                logger.exception("shutdown: could not hand back reserved task %s", request.id)
                continue
            handed += 1
        if handed:
            logger.info("shutdown: %d reserved task(s) not started handed back to the queue", handed)


def install(app: Celery, seconds: float, pool: Pool) -> Deadline | None:
    """Hand reserved tasks back when the worker stops; with a pool that can cancel a running task, arm the
    deadline on the worker's warm shutdown."""
    app.steps["worker"].add(GiveBackReserved)
    if pool not in HAND_BACK_POOLS:
        return None
    deadline = Deadline(app, seconds)
    worker_shutting_down.connect(deadline.shutting_down, weak=False, dispatch_uid="jobqueue_worker.shutdown")
    return deadline
