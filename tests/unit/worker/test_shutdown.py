"""The shutdown deadline (jobqueue_worker/shutdown.py): armed by a warm shutdown only, once; at the deadline a
cold shutdown without a second soft wait."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import weakref
from types import SimpleNamespace
from typing import Any

import pytest
from celery import Celery

from jobqueue_worker import shutdown


def test_a_warm_shutdown_arms_the_deadline_once_and_it_sends_sigquit_without_a_soft_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    app = Celery("t", set_as_current=False)
    app.conf.worker_soft_shutdown_timeout = 30
    killed = threading.Event()
    sent: list[tuple[int, int]] = []

    def kill(pid: int, sig: int) -> None:
        sent.append((pid, sig))
        killed.set()

    monkeypatch.setattr(shutdown.os, "kill", kill)
    armed: list[Any] = []
    monkeypatch.setattr(shutdown.threading, "Timer", lambda seconds, fn: armed.append((seconds, fn)) or _Started(fn))
    deadline = shutdown.Deadline(app, 42)
    deadline.shutting_down(sig="SIGQUIT", how="Cold")
    assert armed == []  # a cold shutdown hands back on its own
    deadline.shutting_down(sig="SIGTERM", how="Warm")
    deadline.shutting_down(sig="SIGTERM", how="Warm")  # a second SIGTERM moves nothing
    assert [seconds for seconds, _ in armed] == [42]
    armed[0][1]()
    assert killed.is_set()
    assert sent == [(shutdown.os.getpid(), signal.SIGQUIT)]
    assert app.conf.worker_soft_shutdown_timeout == 0


class _Started:
    daemon = False

    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def start(self) -> None:
        assert self.daemon  # a worker whose tasks ended exits without waiting for the timer


@pytest.mark.parametrize("pool", list(shutdown.Pool))
def test_only_pools_that_can_cancel_a_running_task_get_the_deadline(pool: shutdown.Pool) -> None:
    app = Celery("t", set_as_current=False)
    armed = shutdown.install(app, 5, pool)
    assert (armed is not None) == (pool in (shutdown.Pool.PREFORK, shutdown.Pool.THREADS))
    assert shutdown.GiveBackReserved in app.steps["worker"]  # reserved tasks go back with every pool


def test_the_entry_point_imports_only_the_standard_library_before_its_sigterm_handler() -> None:
    """As a container's PID 1 the worker drops a SIGTERM that arrives before it has a handler (a Pod deleted
    while it starts would keep taking tasks): `main` installs one first, so importing the entry module must
    not pull in pydantic or Celery (hundreds of milliseconds)."""
    probe = "import sys, jobqueue_worker.__main__; print(sorted({'pydantic', 'celery', 'kombu'} & set(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60)
    assert done.stdout.strip() == "[]"


def test_a_request_whose_job_a_pool_process_already_holds_is_not_handed_back() -> None:
    """A job written to a prefork child runs there: handing its request back as well ran it twice."""

    class Job:
        _write_to: object = None
        _scheduled_for: object = None

    written, mid_write, queued = Job(), Job(), Job()
    written._write_to = object()
    mid_write._scheduled_for = object()
    requests = {
        name: SimpleNamespace(_apply_result=weakref.ref(job))
        for name, job in {"written": written, "mid_write": mid_write, "queued": queued}.items()
    }
    requests["never_handed"] = SimpleNamespace(_apply_result=None)
    held = {name: shutdown.written_to_a_process(request) for name, request in requests.items()}
    assert held == {"written": True, "mid_write": True, "queued": False, "never_handed": False}
