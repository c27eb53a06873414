"""Prometheus metrics of one worker Pod, from its main process and every pool child.

Task hooks run where Celery fires them: `task_received` in the main process, `task_prerun`/`postrun`/
`success`/`retry` in the pool child that runs the task, `task_failure` in either (the main process
reports hard time limits and lost children). prometheus-client's multiprocess mode sums the per-process
files, so `PROMETHEUS_MULTIPROC_DIR` must be set before this module is imported (see __main__).

Active tasks are not counted in files: the main process reads them from Celery's own bookkeeping at
scrape time, so a child killed mid-task cannot leave a stale gauge behind.
"""

from __future__ import annotations

import collections
import os
import time
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from billiard.pool import EX_RECYCLE  # type: ignore[import-untyped]  # billiard: untyped
from celery import signals
from celery.worker import state as worker_state
from prometheus_client import CollectorRegistry, Counter, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from jobqueue_worker.contract import ACTIVE_TASKS_METRIC
from jobqueue_worker.sent_time import sent_at
from jobqueue_worker.settings import WorkerSettings

# From a few milliseconds to hours: the workloads range from no-op tasks to evaluation jobs.
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
LABELS = ("jobqueue", "queue", "task")
UNKNOWN_TASK = "unknown"  # a message naming no registered task: its name is not a safe label value

TASKS = Counter(
    "jobqueue_worker_tasks",
    "Tasks by state: received, started, succeeded, failed, retried, rejected.",
    [*LABELS, "state"],
    registry=None,
)
DURATION = Histogram(
    "jobqueue_worker_task_duration_seconds",
    "Run time of one task attempt in the pool, from start to finish.",
    LABELS,
    buckets=BUCKETS,
    registry=None,
)
QUEUE_WAIT = Histogram(
    "jobqueue_worker_task_queue_wait_seconds",
    "Time from when the task was sent (or its ETA, if later) until it started; only for stamped messages.",
    LABELS,
    buckets=BUCKETS,
    registry=None,
)
DEAD_LETTERS = Counter(
    "jobqueue_worker_dead_letters",
    "Messages put on the queue's dead-letter list instead of run, by reason.",
    ["jobqueue", "queue", "reason"],
    registry=None,
)
DEAD_LETTERS_DROPPED = Counter(
    "jobqueue_worker_dead_letters_dropped",
    "Oldest dead letters dropped because the list reached its maximum length.",
    ["jobqueue", "queue"],
    registry=None,
)
RECYCLES = Counter(
    "jobqueue_worker_child_recycles",
    "Pool children replaced after reaching a limit, by cause: memory or max_tasks.",
    ["jobqueue", "queue", "cause"],
    registry=None,
)


def _eta_timestamp(request: Any) -> float | None:
    eta = getattr(request, "eta", None)
    if not eta:
        return None
    try:
        return datetime.fromisoformat(str(eta)).timestamp()
    except ValueError:
        return None


class TaskHooks:
    """Celery signal receivers that update the metrics; one instance per worker, shared by its children."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._jobqueue = settings.name
        self._queue = settings.queue
        self._max_tasks_per_child = settings.max_tasks_per_child
        self._started: dict[str, float] = {}  # task id -> monotonic start, in the child running it
        self._finished = 0  # tasks finished by this pool child, to tell why it recycles
        # Celery 5.7 fires task_failure twice for a hard time limit (on_timeout and on_failure): a failure
        # is terminal, so one per task id; the last few ids are enough to catch the repeat.
        self._recent_failures: collections.deque[str] = collections.deque(maxlen=256)

    def _count(self, task: str, state: str) -> None:
        TASKS.labels(self._jobqueue, self._queue, task, state).inc()

    def received(self, request: Any = None, **_: Any) -> None:
        self._count(request.name, "received")

    def prerun(self, task_id: str = "", task: Any = None, **_: Any) -> None:
        self._count(task.name, "started")
        self._started[task_id] = time.monotonic()
        sent = sent_at(task.request)
        if sent is not None:
            begin = max(sent, _eta_timestamp(task.request) or sent)
            QUEUE_WAIT.labels(self._jobqueue, self._queue, task.name).observe(max(0.0, time.time() - begin))

    def postrun(self, task_id: str = "", task: Any = None, state: str = "", **_: Any) -> None:
        self._finished += 1
        started = self._started.pop(task_id, None)
        if started is not None:
            DURATION.labels(self._jobqueue, self._queue, task.name).observe(time.monotonic() - started)
        if state == "REJECTED":
            self._count(task.name, "rejected")

    def succeeded(self, sender: Any = None, **_: Any) -> None:
        self._count(sender.name, "succeeded")

    def failed(self, sender: Any = None, task_id: str = "", **_: Any) -> None:
        if task_id in self._recent_failures:
            return
        self._recent_failures.append(task_id)
        self._count(sender.name, "failed")

    def retried(self, sender: Any = None, **_: Any) -> None:
        self._count(sender.name, "retried")

    def rejected(self, **_: Any) -> None:
        self._count(UNKNOWN_TASK, "rejected")

    def child_exit(self, pid: int = 0, exitcode: int = 0, **_: Any) -> None:
        """In a pool child about to exit: count a recycle, drop the child's live-gauge files."""
        if exitcode == EX_RECYCLE:
            hit_max_tasks = self._max_tasks_per_child and self._finished >= self._max_tasks_per_child
            RECYCLES.labels(self._jobqueue, self._queue, "max_tasks" if hit_max_tasks else "memory").inc()
        multiprocess.mark_process_dead(pid)  # type: ignore[no-untyped-call]

    def connect(self) -> None:
        """Connect every receiver (strong references: Celery signals hold weak ones by default)."""
        for signal, receiver in (
            (signals.task_received, self.received),
            (signals.task_prerun, self.prerun),
            (signals.task_postrun, self.postrun),
            (signals.task_success, self.succeeded),
            (signals.task_failure, self.failed),
            (signals.task_retry, self.retried),
            (signals.task_rejected, self.rejected),
            (signals.task_unknown, self.rejected),
            (signals.worker_process_shutdown, self.child_exit),
        ):
            signal.connect(receiver, weak=False)


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as listing:
            return [int(child) for child in listing.read().split()]
    except OSError:
        return []


def _rss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def resident_memory_bytes(pid: int | None = None) -> int:
    """Resident memory of a process and all its descendants (the worker and its pool children); 0 where
    /proc cannot be read."""
    pending, total = [os.getpid() if pid is None else pid], 0
    while pending:
        current = pending.pop()
        total += _rss_bytes(current)
        pending += _children(current)
    return total


class LiveCollector(Collector):
    """Gauges computed at scrape time in the main process: active tasks, configured concurrency, memory."""

    def __init__(self, settings: WorkerSettings) -> None:
        self._jobqueue = settings.name
        self._queue = settings.queue
        self._concurrency = settings.concurrency

    def collect(self) -> Iterator[GaugeMetricFamily]:
        active = GaugeMetricFamily(
            ACTIVE_TASKS_METRIC, "Tasks executing in this worker's pool now.", labels=list(LABELS)
        )
        by_task = collections.Counter(request.name for request in list(worker_state.active_requests))
        for task, count in sorted(by_task.items()):
            active.add_metric([self._jobqueue, self._queue, task], count)
        yield active
        concurrency = GaugeMetricFamily(
            "jobqueue_worker_concurrency", "Pool size: tasks this worker can run at once.", labels=["jobqueue", "queue"]
        )
        concurrency.add_metric([self._jobqueue, self._queue], self._concurrency)
        yield concurrency
        memory = GaugeMetricFamily(
            "jobqueue_worker_resident_memory_bytes",
            "Resident memory of the worker: its main process and every pool child.",
            labels=["jobqueue", "queue"],
        )
        memory.add_metric([self._jobqueue, self._queue], resident_memory_bytes())
        yield memory


def install(settings: WorkerSettings) -> CollectorRegistry:
    """Connect the task hooks; return the registry /metrics serves (every process's files + live gauges)."""
    TaskHooks(settings).connect()
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
    registry.register(LiveCollector(settings))
    return registry
