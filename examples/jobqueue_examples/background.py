"""Background jobs: retries with back-off, then a dead-letter list for jobs that keep failing.

A job that fails for good (its retries used up, or an error not worth retrying) is pushed as JSON to the
Redis list `jobqueue:dead-letter:<queue>` in the result backend, where an operator (human) can read
it, fix the cause and send it again (`dead_letters`, `requeue`).
"""

from __future__ import annotations

import json
import time
from typing import Any, Final

from celery import Celery, Task
from celery.result import AsyncResult

import jobqueue_worker.sent_time  # noqa: F401  # queue-wait metrics

app = Celery("background", set_as_current=False)

PROCESS: Final = "jobqueue_examples.background.process"


def dead_letter_key(queue: str) -> str:
    return f"jobqueue:dead-letter:{queue}"


class TransientError(Exception):
    """Worth retrying."""


class DeadLettering(Task):  # type: ignore[misc]  # celery is untyped
    """On a final failure, keep the job in the queue's dead-letter list instead of only logging it."""

    def on_failure(self, exc: Exception, task_id: str, args: Any, kwargs: Any, einfo: Any) -> None:
        queue = (self.request.delivery_info or {}).get("routing_key") or "unknown"
        entry = {"id": task_id, "task": self.name, "args": args, "kwargs": kwargs, "error": repr(exc)}
        self.app.backend.client.rpush(dead_letter_key(queue), json.dumps(entry))


@app.task(  # type: ignore[untyped-decorator]  # celery is untyped
    bind=True,
    base=DeadLettering,
    name=PROCESS,
    autoretry_for=(TransientError,),
    retry_backoff=True,
    retry_backoff_max=60,
    max_retries=3,
)
def process(self: Task, job: str, seconds: float = 0.01, failures: int = 0) -> str:
    """Stand-in for a job: fails (transiently) its first `failures` attempts, then sleeps `seconds`."""
    if self.request.retries < failures:
        raise TransientError(f"{job}: attempt {self.request.retries + 1} failed on purpose")
    time.sleep(seconds)
    return job


def dead_letters(client: Any, queue: str) -> list[dict[str, Any]]:
    """The dead-letter list of a queue, oldest first."""
    return [json.loads(raw) for raw in client.lrange(dead_letter_key(queue), 0, -1)]


def requeue(sender: Celery, client: Any, queue: str) -> list[AsyncResult]:
    """Send every dead job of `queue` again (as new tasks) and empty the list."""
    sent = []
    while (raw := client.lpop(dead_letter_key(queue))) is not None:
        entry = json.loads(raw)
        sent.append(sender.send_task(entry["task"], args=entry["args"], kwargs=entry["kwargs"], queue=queue))
    return sent
