"""The time a task was sent, carried in its message headers, so the worker can measure queue wait.

Celery's message protocol has no send timestamp. Importing this module connects a `before_task_publish`
hook that stamps one; every process that imports `jobqueue_worker` (the worker itself, so retries are
stamped too, and producers using `jobqueue_worker.demo:app` or importing this module) sends it. A
producer without the hook can set the header itself: `apply_async(headers={HEADER: time.time()})`.
"""

from __future__ import annotations

import time
from typing import Any

from celery.signals import before_task_publish

from jobqueue_worker.contract import SENT_AT_HEADER

HEADER = SENT_AT_HEADER


def stamp(headers: dict[str, Any] | None = None, **_: Any) -> None:
    """`before_task_publish` receiver: record the wall-clock send time (seconds since the epoch)."""
    if headers is not None:
        headers[HEADER] = time.time()


def sent_at(request: Any) -> float | None:
    """The send time stamped on a task's request, or None when the producer did not stamp it."""
    value = getattr(request, HEADER, None)
    if value is None:
        value = (getattr(request, "headers", None) or {}).get(HEADER)
    return float(value) if isinstance(value, int | float) else None


before_task_publish.connect(stamp, weak=False, dispatch_uid="jobqueue_worker.sent_time.stamp")
