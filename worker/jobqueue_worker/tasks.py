"""Built-in tasks for demos, tests and benchmarks: each does one kind of work and records itself.

Every task takes an optional `run_id`. With one, it counts its attempts (`started`) and its successful
ends (`done`) in the result backend's Redis (see `records`), so a test can check that every task it sent
ran to completion exactly once. They are shared tasks: any app that imports this module gets them.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any, cast

from celery import Task, shared_task

from jobqueue_worker import records

MIB = 1024 * 1024


class DemoTaskError(Exception):
    """The failure the `fail` and `flaky` tasks raise on purpose."""


def builtin(**options: Any) -> Callable[[Callable[..., Any]], Any]:
    """`shared_task(bind=True, ...)` with a type mypy can follow (celery itself is untyped)."""
    return cast(Callable[[Callable[..., Any]], Any], shared_task(bind=True, **options))


def _record(task: Task, run_id: str | None, event: str) -> None:
    if run_id is None:
        return
    backend = task.app.backend
    client = getattr(backend, "client", None)
    if client is None:
        raise RuntimeError(f"run_id needs a Redis result backend, not {type(backend).__name__}")
    options = task.app.conf.result_backend_transport_options or {}
    records.record(client, run_id, event, task.request.id, prefix=options.get("global_keyprefix", ""))


@builtin()
def noop(self: Task, run_id: str | None = None, padding: str = "") -> None:
    """Nothing: measures the queue's own overhead. `padding` is ignored: it makes a message as large as a
    test needs (a broker filled to its maxmemory)."""
    _record(self, run_id, records.STARTED)
    _record(self, run_id, records.DONE)


@builtin()
def sleep(self: Task, seconds: float, run_id: str | None = None) -> float:
    """Wait, using no CPU: a stand-in for I/O-bound work and for long tasks."""
    _record(self, run_id, records.STARTED)
    time.sleep(seconds)
    _record(self, run_id, records.DONE)
    return seconds


@builtin()
def burn_cpu(self: Task, milliseconds: int, run_id: str | None = None) -> int:
    """Spin on the CPU for the given wall time; returns the iterations done."""
    _record(self, run_id, records.STARTED)
    deadline = time.monotonic() + milliseconds / 1000
    iterations = 0
    while time.monotonic() < deadline:
        iterations += 1
    _record(self, run_id, records.DONE)
    return iterations


@builtin()
def allocate(self: Task, megabytes: int, hold_seconds: float = 0, run_id: str | None = None) -> int:
    """Touch `megabytes` MiB of memory (resident, not just reserved), hold it, free it; returns bytes."""
    _record(self, run_id, records.STARTED)
    block = b"\x01" * (megabytes * MIB)
    time.sleep(hold_seconds)
    size = len(block)
    del block
    _record(self, run_id, records.DONE)
    return size


@builtin()
def fail(self: Task, message: str = "failed on purpose", run_id: str | None = None) -> None:
    """Raise DemoTaskError: the task ends FAILURE."""
    _record(self, run_id, records.STARTED)
    raise DemoTaskError(message)


@builtin()
def crash(self: Task, run_id: str | None = None) -> None:
    """SIGKILL the process running it, as the OOM killer would: the pool child under prefork, the whole
    worker under solo or threads. A poison task, for the worker-loss limit and fault tests."""
    _record(self, run_id, records.STARTED)
    os.kill(os.getpid(), signal.SIGKILL)


@builtin(max_retries=None)
def flaky(
    self: Task, failures: int, backoff_seconds: float = 1.0, max_retries: int = 5, run_id: str | None = None
) -> int:
    """Fail the first `failures` attempts, retrying with exponential back-off; returns the attempts made.

    More failures than `max_retries` ends in FAILURE, as a task that keeps failing should.
    """
    _record(self, run_id, records.STARTED)
    attempt = int(self.request.retries)
    if attempt < failures:
        error = DemoTaskError(f"attempt {attempt + 1} of {failures + 1} fails on purpose")
        raise self.retry(exc=error, countdown=backoff_seconds * 2**attempt, max_retries=max_retries)
    _record(self, run_id, records.DONE)
    return attempt + 1
