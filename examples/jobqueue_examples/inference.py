"""ML inference: job states a client can poll in the result backend, and retries with exponential back-off.

States: pending (unknown id), queued (`submit` stored it before sending), running (`task_track_started`),
completed, failed, cancelled (revoked). Celery has no "queued" state of its own: `submit` writes one.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Final

from celery import Celery, Task
from celery.result import AsyncResult

import jobqueue_worker.sent_time  # noqa: F401  # queue-wait metrics

app = Celery("inference", set_as_current=False)
app.conf.task_track_started = True  # STARTED while running: the "running" state

PREDICT: Final = "jobqueue_examples.inference.predict"
QUEUED: Final = "QUEUED"
STATES: Final = {
    "PENDING": "pending",
    QUEUED: "queued",
    "STARTED": "running",
    "RETRY": "running",
    "SUCCESS": "completed",
    "FAILURE": "failed",
    "REVOKED": "cancelled",
}


class TransientError(Exception):
    """A failure worth retrying (a model server restarting, a GPU out of memory for a moment)."""


@app.task(  # type: ignore[untyped-decorator]  # celery is untyped
    bind=True,
    name=PREDICT,
    autoretry_for=(TransientError,),
    retry_backoff=True,  # 1 s, 2 s, 4 s ... (with jitter)
    retry_backoff_max=300,
    max_retries=3,
)
def predict(self: Task, model: str, inputs: list[float], seconds: float = 0.1, transient_failures: int = 0) -> Any:
    """Stand-in for a model call: sleeps, fails transiently the first `transient_failures` attempts."""
    if self.request.retries < transient_failures:
        raise TransientError(f"{model}: attempt {self.request.retries + 1} failed on purpose")
    time.sleep(seconds)
    return {"model": model, "score": sum(inputs) / max(len(inputs), 1), "attempts": self.request.retries + 1}


def submit(sender: Celery, model: str, inputs: list[float], queue: str = "inference", **kwargs: Any) -> AsyncResult:
    """Record the job as queued, then send it (in that order, so the worker's states always come later)."""
    task_id = str(uuid.uuid4())
    sender.backend.store_result(task_id, None, QUEUED)
    return sender.send_task(PREDICT, args=[model, inputs], kwargs=kwargs, queue=queue, task_id=task_id)


def job_state(result: AsyncResult) -> str:
    """One of pending, queued, running, completed, failed, cancelled."""
    state = str(result.state)
    return STATES.get(state, state.lower())
