"""A third-party-style app whose own result backend exists only on its author's machine (`backend=` a Redis
that nobody listens on), run by a real `jobqueue-worker`: its tasks run, their results cannot be stored."""

from __future__ import annotations

from pathlib import Path

from celery import Celery

UNREACHABLE_BACKEND = "redis://:secret@127.0.0.1:1/0"
"""Port 1: nothing listens there, connections are refused at once. The password must never be shown."""

app = Celery("diary", backend=UNREACHABLE_BACKEND)
app.conf.result_backend_transport_options = {"retry_policy": {"max_retries": 2}}  # Celery's default waits ~20 s


@app.task(name="diary.note")  # type: ignore[untyped-decorator]  # celery is untyped
def note(path: str, text: str) -> str:
    """The side effect a requeue would repeat: one line appended to a file."""
    with Path(path).open("a") as out:
        out.write(text + "\n")
    return text
