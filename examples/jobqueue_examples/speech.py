"""Speech-to-text: transcription on three queues, and a periodic cleanup task that Celery beat sends.

`CLEANUP_EVERY_SECONDS` (env of the JobQueue, so beat and workers see it) sets the cleanup period;
the cleanup goes to the `low` queue.
"""

from __future__ import annotations

import os
import time
from typing import Final

from celery import Celery, Task

import jobqueue_worker.sent_time  # noqa: F401  # queue-wait metrics
from jobqueue_worker import records

app = Celery("speech", set_as_current=False)

TRANSCRIBE: Final = "jobqueue_examples.speech.transcribe"
CLEANUP: Final = "jobqueue_examples.speech.cleanup"
CLEANUP_RUN: Final = "speech-cleanup"
"""The run id under which every cleanup records itself (`jobqueue_worker.records`)."""

app.conf.beat_schedule = {
    "cleanup": {
        "task": CLEANUP,
        "schedule": float(os.environ.get("CLEANUP_EVERY_SECONDS", "3600")),
        "options": {"queue": "low"},
    }
}


@app.task(bind=True, name=TRANSCRIBE)  # type: ignore[untyped-decorator]  # celery is untyped
def transcribe(self: Task, audio: str, seconds: float = 0.1) -> str:
    """Stand-in for a speech model: sleeps, returns a transcript."""
    time.sleep(seconds)
    return f"transcript of {audio}"


@app.task(bind=True, name=CLEANUP)  # type: ignore[untyped-decorator]
def cleanup(self: Task) -> int:
    """Stand-in for deleting expired audio and transcripts; records each run so it can be counted."""
    records.record(self.app.backend.client, CLEANUP_RUN, records.DONE, self.request.id)
    return 0
