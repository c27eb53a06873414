"""Background jobs: retries with back-off, then the queue's dead-letter list for jobs that keep failing.

A job that fails for good (its retries used up, or an error not worth retrying) is kept by the worker
itself in the queue's dead-letter list (`queues[].deadLetter`, on by default), with the reason, the
exception and the original message: `jobqueue-worker deadletter list --queue critical` shows it,
`... requeue --id ID` sends it again unchanged once the cause is fixed. No task code is needed for it;
the helpers below read the list from Python.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any, Final

import redis
from celery import Celery, Task

import jobqueue_worker.sent_time  # noqa: F401  # queue-wait metrics
from jobqueue_worker import admin, contract
from jobqueue_worker.contract import DeadLetter

app = Celery("background", set_as_current=False)

PROCESS: Final = "jobqueue_examples.background.process"


class TransientError(Exception):
    """Worth retrying."""


@app.task(  # type: ignore[untyped-decorator]  # celery is untyped
    bind=True,
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


def dead_letters(client: redis.Redis, queue: str, prefix: str = "") -> list[DeadLetter]:
    """The dead letters of a queue, oldest first."""
    return [
        letter for _, letter in reversed(list(admin.entries(client, contract.dead_letter_key(queue, prefix)))) if letter
    ]


def arguments(letter: DeadLetter) -> tuple[list[Any], dict[str, Any]]:
    """The positional and keyword arguments of a dead-lettered Celery task (protocol 2, JSON)."""
    body = letter.message["body"]
    if letter.message.get("properties", {}).get("body_encoding") == "base64":
        body = base64.b64decode(body)
    args, kwargs, _ = json.loads(body)
    return list(args), dict(kwargs)
