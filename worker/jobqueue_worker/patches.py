"""Workarounds for the ways Celery itself can lose a task, each applied once in the worker process.

- A task cancelled after a lost broker connection (`worker_cancel_long_running_tasks_on_connection_loss`)
  must come back, not be acknowledged. Celery marks the request cancelled only after it has recorded the
  retry in the result backend; when that backend is the broker that just went away, the recording
  fails, the mark is never set, and the killed task is then taken for a revoked one and acknowledged:
  lost. Here the mark is set whatever happens, so the message stays unacknowledged and comes back
  (`held.Holders`: the worker gives back what its old connection held as soon as it reconnects).
"""

from __future__ import annotations

from typing import Any

from celery.worker import request as celery_request


def _patch_cancel() -> None:
    cls = celery_request.Request
    if getattr(cls, "_jobqueue_cancel_patched", False):
        return
    cancel = cls.cancel

    def patched_cancel(self: Any, pool: Any, signal: Any = None, emit_retry: bool = True) -> Any:
        try:
            return cancel(self, pool, signal=signal, emit_retry=emit_retry)
        finally:
            if self.time_start:  # the job was running, so it was terminated: never announce it as revoked
                self._already_cancelled = True

    cls.cancel = patched_cancel
    cls._jobqueue_cancel_patched = True


def install() -> None:
    _patch_cancel()
