"""Count finished tasks and their run time in the broker, so the operator can measure rates.

The operator reads `<key prefix>jobqueue:stats:<queue>` (a hash) in the same pipeline as the queue depth:
`completed` (task attempts finished, whatever their outcome), `run_seconds` and `run_seconds_sq` (sums of
their run times and squares). It derives completion and arrival rates and the run-time mean and variance
from their differences between ticks. Kept in the broker because every worker already shares it and it
outlives the Pods (a Prometheus counter would vanish with a scaled-down Pod).

Each process that runs tasks (a pool child under prefork) adds its attempts up in memory and a
background thread writes the sums at most once a second, plus once more when the process exits. A
broker round trip per task cost about a tenth of a no-op worker's throughput; the operator reads the
hash every few seconds, so a second of delay changes nothing for it. A failed write is logged, kept
and retried with the next one; it never fails a task.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis
from celery import Celery, signals

from jobqueue_worker.brokerclient import plain_client
from jobqueue_worker.contract import STATS_FIELDS, stats_key

FLUSH_INTERVAL_SECONDS = 1.0
logger = logging.getLogger(__name__)


@dataclass
class Totals:
    """Finished attempts not yet written to the broker."""

    completed: int = 0
    run_seconds: float = 0.0
    run_seconds_sq: float = 0.0

    def add(self, other: Totals) -> None:
        self.completed += other.completed
        self.run_seconds += other.run_seconds
        self.run_seconds_sq += other.run_seconds_sq


def record(client: redis.Redis, queue: str, totals: Totals, prefix: str = "") -> None:
    """Add `totals` to the queue's stats hash, all three fields or none (MULTI/EXEC)."""
    name = stats_key(queue, prefix)
    completed, run_seconds, run_seconds_sq = STATS_FIELDS
    pipe = client.pipeline(transaction=True)
    pipe.hincrby(name, completed, totals.completed)
    pipe.hincrbyfloat(name, run_seconds, totals.run_seconds)
    pipe.hincrbyfloat(name, run_seconds_sq, totals.run_seconds_sq)
    pipe.execute()


class Completions:
    """task_prerun/task_postrun receivers that time each attempt; a per-process thread writes the sums."""

    def __init__(self, queue: str, prefix: str = "", interval: float = FLUSH_INTERVAL_SECONDS) -> None:
        self._queue, self._prefix, self._interval = queue, prefix, interval
        self._started: dict[str, float] = {}
        self._lock = threading.Lock()
        self._pending = Totals()
        self._app: Celery | None = None
        self._flusher_pid = 0  # the process whose flusher thread runs: threads do not survive a fork
        self._stop = threading.Event()

    def prerun(self, task_id: str = "", **_: Any) -> None:
        self._started[task_id] = time.monotonic()

    def postrun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        started = self._started.pop(task_id, None)
        if started is None or task is None:
            return
        seconds = time.monotonic() - started
        with self._lock:
            self._pending.add(Totals(1, seconds, seconds * seconds))
            self._app = task.app
        if self._flusher_pid != os.getpid():
            self._start_flusher()

    def _start_flusher(self) -> None:
        self._flusher_pid = os.getpid()
        self._stop = threading.Event()
        threading.Thread(target=self._flush_every_interval, name="jobqueue-completions", daemon=True).start()

    def _flush_every_interval(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()

    def flush(self) -> None:
        """Write what accumulated since the last write; on failure keep it for the next one."""
        with self._lock:
            totals, self._pending, app = self._pending, Totals(), self._app
        if not totals.completed or app is None:
            return
        try:
            with plain_client(app) as client:
                record(client, self._queue, totals, self._prefix)
        except Exception as exc:  # the broker's trouble must not fail tasks; the consumer reports it
            logger.warning("could not record %d finished tasks in the broker: %s", totals.completed, exc)
            with self._lock:
                self._pending.add(totals)

    def process_exit(self, **_: Any) -> None:
        """The process is exiting: stop its flusher and write what is left (one attempt, bounded timeouts)."""
        self._stop.set()
        self.flush()

    def connect(self) -> None:
        signals.task_prerun.connect(self.prerun, weak=False)
        signals.task_postrun.connect(self.postrun, weak=False)
        signals.worker_process_shutdown.connect(self.process_exit, weak=False)  # a prefork pool child
        signals.worker_shutdown.connect(self.process_exit, weak=False)  # the main process (solo, threads)
