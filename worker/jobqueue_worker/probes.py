"""What /healthz and /readyz answer, kept in the worker's main process by Celery hooks.

- ready: a consumer bootstep that starts after the task consumer is consuming and stops when the
  consumer stops (broker connection lost, or shutdown). So "ready" means "connected and taking tasks".
- alive: Celery's event-loop heartbeat (every 2 s) is recent. A main process whose loop hangs stops
  heartbeating and gets restarted. Not failed on purpose: during a warm shutdown (the drain may take
  as long as the longest task), and while a task runs (a solo pool runs tasks on the loop itself;
  stuck tasks are the time limits' job, not the kubelet's).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery, bootsteps
from celery.signals import heartbeat_sent, worker_shutting_down
from celery.worker import state as worker_state

# How long without a heartbeat before the worker is declared dead. Celery heartbeats every 2 s; a
# broker outage also stops them, so a worker disconnected for this long gets restarted too.
STALE_AFTER_SECONDS = 60.0


class Health:
    """Thread-safe flags written by Celery hooks and read by the HTTP server thread."""

    def __init__(self, stale_after: float = STALE_AFTER_SECONDS) -> None:
        self._lock = threading.Lock()
        self._stale_after = stale_after
        self._last_beat = time.monotonic()  # the start counts as a beat: time to connect
        self._connected = False
        self._shutting_down = False

    def beat(self) -> None:
        with self._lock:
            self._last_beat = time.monotonic()

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._connected = connected

    def set_shutting_down(self) -> None:
        with self._lock:
            self._shutting_down = True

    def ready(self) -> tuple[bool, str]:
        """Readiness and the reason, for the probe's response body."""
        with self._lock:
            if self._shutting_down:
                return False, "shutting down"
            if not self._connected:
                return False, "not connected to the broker"
            return True, "consuming"

    def alive(self) -> tuple[bool, str]:
        """Liveness and the reason, for the probe's response body."""
        with self._lock:
            age = time.monotonic() - self._last_beat
            if self._shutting_down:
                return True, "shutting down"
            if age < self._stale_after:
                return True, f"heartbeat {age:.1f}s ago"
        if worker_state.active_requests:
            return True, f"busy; heartbeat {age:.0f}s ago"
        return False, f"no heartbeat for {age:.0f}s"


HEALTH = Health()


class ConsumerProbe(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """Marks the worker ready once the task consumer runs, not ready when the consumer stops."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        HEALTH.set_connected(True)

    def stop(self, parent: Any) -> None:
        HEALTH.set_connected(False)

    def shutdown(self, parent: Any) -> None:
        HEALTH.set_connected(False)


def _on_heartbeat(**_: Any) -> None:
    HEALTH.beat()


def _on_shutting_down(**_: Any) -> None:
    HEALTH.set_shutting_down()


def install(app: Celery) -> None:
    """Hook the probes into the app; call before the worker is created (the heartbeat checks receivers then)."""
    app.steps["consumer"].add(ConsumerProbe)
    heartbeat_sent.connect(_on_heartbeat, weak=False, dispatch_uid="jobqueue_worker.probes.heartbeat")
    worker_shutting_down.connect(_on_shutting_down, weak=False, dispatch_uid="jobqueue_worker.probes.shutdown")
