"""Celery's event heartbeat, sent with one attempt instead of retried without end.

Celery publishes `worker-heartbeat` (every 2 s, from the timer thread) with kombu's default retry policy,
which has no limit. With the broker gone, that thread retries for ever while holding the event
dispatcher's lock, and a warm shutdown's `worker-offline` event waits on the lock until the kubelet's
SIGKILL. One attempt is enough: the socket timeouts (`app.py`) bound it, and a lost heartbeat is
replaced by the next one 2 s later. The probes' beat (`heartbeat_sent`) fires before the send either way.
"""

from __future__ import annotations

from typing import Any

from celery.worker import heartbeat


class OneAttemptHeart(heartbeat.Heart):  # type: ignore[misc]  # celery is untyped
    """`celery.worker.heartbeat.Heart` whose events are never retried."""

    def _send(self, event: str, retry: bool = False) -> Any:
        return super()._send(event, retry=False)


def install() -> None:
    """Make the worker's consumer create this heart (its bootstep looks `Heart` up in that module)."""
    heartbeat.Heart = OneAttemptHeart
