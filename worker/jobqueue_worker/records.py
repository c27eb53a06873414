"""Where the built-in tasks record what they did, so tests and the demo can count every task exactly.

One Redis hash per run and event, `<key prefix>jobqueue:run:<run id>:<event>`, mapping task id to how
many times that event happened for it. Events: `started` (each attempt) and `done` (finished without
error). "Every task exactly once" is then: `done` has every sent id, each with count 1.
Kept in the result backend's Redis, which producers and workers already share.
"""

from __future__ import annotations

from typing import Any

STARTED = "started"
DONE = "done"
EXPIRE_SECONDS = 7 * 24 * 3600  # runs are for tests and demos: let Redis forget them


def key(run_id: str, event: str, prefix: str = "") -> str:
    return f"{prefix}jobqueue:run:{run_id}:{event}"


def record(client: Any, run_id: str, event: str, task_id: str, prefix: str = "") -> None:
    """Count one event for one task (a Redis client: redis.Redis or the result backend's)."""
    name = key(run_id, event, prefix)
    pipe = client.pipeline()
    pipe.hincrby(name, task_id, 1)
    pipe.expire(name, EXPIRE_SECONDS)
    pipe.execute()


def read(client: Any, run_id: str, event: str, prefix: str = "") -> dict[str, int]:
    """Task id -> count for one event of a run."""
    raw = client.hgetall(key(run_id, event, prefix))
    return {_text(task_id): int(count) for task_id, count in raw.items()}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
