"""The operator's Prometheus metrics: one registry object, served on the operator's metrics port.

Per-JobQueue series are kept as a snapshot per (namespace, jobqueue) and rendered at scrape time, so a
JobQueue's series vanish when `forget` drops it and a queue's when a new snapshot no longer has it.
Every queue of the spec has series, also at zero workers. Labels are bounded: namespace, jobqueue, queue,
and the small enums state, kind, direction and reason; never Pod names.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from jobqueue_operator import broker_replication, naming, oldest
from jobqueue_operator.models import JobQueueSpec

# From milliseconds (a tick of a small JobQueue) to a minute (a reconcile waiting on a slow API server).
BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)
QUEUE_LABELS: Final = ["namespace", "jobqueue", "queue"]

Key = tuple[str, str]
"""(namespace, jobqueue)"""


@dataclass(frozen=True, slots=True)
class QueueSeries:
    """One queue's values at the last tick; None where the broker could not be read."""

    ready: int | None
    in_flight: int | None
    oldest_age_seconds: float | None
    """None: unknown (broker unreadable, or waiting tasks without a send time)."""
    desired: int
    current: int
    ready_workers: int
    ready_by_priority: tuple[tuple[int, int], ...] = ()
    """(priority step, waiting tasks) of each priority list; empty when the broker could not be read."""
    dead_letters: int | None = None
    """Entries of the queue's dead-letter list; None when the broker could not be read."""
    oldest_age_source: str | None = None
    """Where `oldest_age_seconds` came from: `oldest.SOURCES` (None: no age)."""


@dataclass(frozen=True, slots=True)
class BrokerSeries:
    """What one tick saw of the JobQueue's broker beyond its queues (None: not read)."""

    unserved: Mapping[str, int] | None = None
    """Broker queues outside the spec that hold tasks -> how many."""
    used_memory: int | None = None
    max_memory: int | None = None
    replicas: Mapping[str, int] | None = None
    """A Sentinel-managed broker's replicas per state (`broker_replication.REPLICA_STATES`); None: not one, or
    its master was not read."""
    lag_seconds: int | None = None
    """The largest replication lag of its replicas, in seconds since their last acknowledgement."""
    lag_bytes: int | None = None
    """The largest distance between the master's replication offset and a replica's."""
    availability: str | None = None
    """A Sentinel-managed broker's BrokerAvailable reason (`broker_replication.AVAILABILITY_REASONS`); None:
    not one."""


@dataclass(frozen=True, slots=True)
class QueueTargets:
    """What one queue's spec promises, as series the alert rules compare against (None: not set)."""

    backlog_threshold: int | None = None
    target_wait_seconds: float | None = None
    min_replicas: int | None = None
    """Autoscaled queues only, like max_replicas."""
    max_replicas: int | None = None


def targets_of(spec: JobQueueSpec) -> dict[str, QueueTargets]:
    """Every queue of the spec and its targets."""
    found: dict[str, QueueTargets] = {}
    for queue in spec.queues:
        scaling = queue.autoscaling if queue.autoscaled else None
        wait = scaling.target_wait_seconds if scaling is not None else None
        found[queue.name] = QueueTargets(
            backlog_threshold=queue.alerts.backlog_threshold if queue.alerts is not None else None,
            target_wait_seconds=None if wait is None else float(wait),
            min_replicas=scaling.min_replicas if scaling is not None else None,
            max_replicas=scaling.max_replicas if scaling is not None else None,
        )
    return found


CONDITION_STATUSES: Final = ("true", "false", "unknown")
OOM_KILLED: Final = "OOMKilled"


def _created(pod: Mapping[str, Any]) -> float:
    stamp = (pod.get("metadata") or {}).get("creationTimestamp")
    if not stamp:
        return 0.0
    try:
        return datetime.fromisoformat(str(stamp).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return 0.0


@dataclass
class _Restarts:
    """One JobQueue's worker restarts as counted from Pod status: the last restartCount seen per
    container, and the counters per queue."""

    seen: dict[str, int]
    restarts: Counter[str]
    oom_kills: Counter[str]


class OperatorMetrics(Collector):
    """The registry and everything in it; thread safe (kopf runs handlers in threads)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._queues: dict[Key, dict[str, QueueSeries]] = {}
        self._broker_up: dict[Key, bool] = {}
        self._decisions: dict[Key, Counter[tuple[str, str, str]]] = {}
        self._targets: dict[Key, dict[str, QueueTargets]] = {}
        self._conditions: dict[Key, dict[str, str]] = {}
        self._restarts: dict[Key, _Restarts] = {}
        self._brokers: dict[Key, BrokerSeries] = {}
        self._redelivered: dict[Key, Counter[tuple[str, str]]] = {}
        self._failovers: dict[Key, int] = {}
        self._started = time.time()
        """Pods created before this were restarted, or not, before the operator could count: baseline."""
        self.reconcile_seconds = Histogram(
            "jobqueue_reconcile_duration_seconds",
            "Time to reconcile one JobQueue (apply its children and compute its status).",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.tick_seconds = Histogram(
            "jobqueue_autoscaler_tick_duration_seconds",
            "Time of one autoscaler tick of one JobQueue: measure, decide, scale, export.",
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.leader = Gauge(
            "jobqueue_operator_leader",
            "1 while this operator process holds the leader Lease and acts; 0 while it stands by.",
            registry=self.registry,
        )
        self.registry.register(self)

    def set_queues(self, namespace: str, jobqueue: str, queues: Mapping[str, QueueSeries], broker_up: bool) -> None:
        """Replace a JobQueue's snapshot; queues not in `queues` lose their series (decisions too)."""
        key = (namespace, jobqueue)
        with self._lock:
            self._queues[key] = dict(queues)
            self._broker_up[key] = broker_up
            counts = self._decisions.get(key, Counter())
            self._decisions[key] = Counter({k: v for k, v in counts.items() if k[0] in queues})

    def set_broker(self, namespace: str, jobqueue: str, series: BrokerSeries) -> None:
        with self._lock:
            self._brokers[(namespace, jobqueue)] = series

    def count_failovers(self, namespace: str, jobqueue: str, failovers: int) -> None:
        """Failovers of a Sentinel-managed broker seen (0: its counter exists from the first look on)."""
        with self._lock:
            key = (namespace, jobqueue)
            self._failovers[key] = self._failovers.get(key, 0) + failovers

    def count_redelivered(self, namespace: str, jobqueue: str, queue: str, reason: str, tasks: int) -> None:
        """Tasks of a dead worker the operator put back on `queue`."""
        with self._lock:
            self._redelivered.setdefault((namespace, jobqueue), Counter())[(queue, reason)] += tasks

    def count_decision(self, namespace: str, jobqueue: str, queue: str, direction: str, reason: str) -> None:
        with self._lock:
            self._decisions.setdefault((namespace, jobqueue), Counter())[(queue, direction, reason)] += 1

    def set_spec(self, namespace: str, jobqueue: str, spec: JobQueueSpec) -> None:
        """Export the spec's per-queue targets (alert thresholds, wait target, replica bounds)."""
        with self._lock:
            self._targets[(namespace, jobqueue)] = targets_of(spec)

    def set_conditions(self, namespace: str, jobqueue: str, conditions: Mapping[str, str]) -> None:
        """The status conditions, type -> "True" / "False" / "Unknown", as written to the JobQueue."""
        with self._lock:
            self._conditions[(namespace, jobqueue)] = {kind: value.lower() for kind, value in conditions.items()}

    def observe_worker_pods(self, namespace: str, jobqueue: str, pods: Sequence[Mapping[str, Any]]) -> None:
        """Count container restarts and OOM kills of the JobQueue's worker Pods since the last look.

        A container's restartCount only grows, so the increase since the last look is added to its queue's
        counter; one restart whose last termination was OOMKilled counts as an OOM kill. A Pod first seen
        that existed before the operator started is a baseline (its past restarts were not seen live)."""
        key = (namespace, jobqueue)
        with self._lock:
            state = self._restarts.setdefault(key, _Restarts({}, Counter(), Counter()))
            seen: dict[str, int] = {}
            for pod in pods:
                metadata = pod.get("metadata") or {}
                queue = naming.queue_of(metadata)
                if not queue:
                    continue
                new_pod = _created(pod) >= self._started
                for container in (pod.get("status") or {}).get("containerStatuses") or []:
                    name = f"{metadata.get('uid', '')}/{container.get('name', '')}"
                    count = int(container.get("restartCount") or 0)
                    previous = state.seen.get(name, 0 if new_pod else count)
                    seen[name] = count
                    if count > previous:
                        state.restarts[queue] += count - previous
                        terminated = (container.get("lastState") or {}).get("terminated") or {}
                        if terminated.get("reason") == OOM_KILLED:
                            state.oom_kills[queue] += 1
            state.seen = seen

    def forget(self, namespace: str, jobqueue: str) -> None:
        """Drop every series of a deleted JobQueue."""
        key = (namespace, jobqueue)
        with self._lock:
            self._queues.pop(key, None)
            self._broker_up.pop(key, None)
            self._decisions.pop(key, None)
            self._targets.pop(key, None)
            self._conditions.pop(key, None)
            self._restarts.pop(key, None)
            self._brokers.pop(key, None)
            self._redelivered.pop(key, None)
            self._failovers.pop(key, None)

    def describe(self) -> Iterator[Metric]:
        return iter(())  # rendered at scrape time only; nothing to check for clashes up front

    def collect(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(
            "jobqueue_queue_depth",
            "Tasks per queue: ready (waiting, over every priority sub-queue) or in_flight (delivered, not acked).",
            labels=[*QUEUE_LABELS, "state"],
        )
        age = GaugeMetricFamily(
            "jobqueue_queue_oldest_task_age_seconds",
            "Age of the oldest waiting task (0 when none waits): from its jobqueue_sent_at header, else a lower "
            "bound the operator measures (jobqueue_queue_oldest_task_age_source says how).",
            labels=QUEUE_LABELS,
        )
        age_source = GaugeMetricFamily(
            "jobqueue_queue_oldest_task_age_source",
            "1 for where the oldest waiting task's age comes from, 0 for the others (all 0 while none waits): "
            "sent-time (the producer's jobqueue_sent_at stamp), first-seen (when the operator first saw it at the "
            "end of its list) or arrivals (counted from what entered the queue); the last two are lower bounds.",
            labels=[*QUEUE_LABELS, "source"],
        )
        workers = GaugeMetricFamily(
            "jobqueue_workers", "Worker Pods of a queue: desired, current or ready.", labels=[*QUEUE_LABELS, "kind"]
        )
        decisions = CounterMetricFamily(
            "jobqueue_scaling_decisions",
            "Autoscaler decisions that changed (or were held from changing) the replicas, by direction and reason.",
            labels=[*QUEUE_LABELS, "direction", "reason"],
        )
        up = GaugeMetricFamily(
            "jobqueue_broker_up", "1 when the JobQueue's broker could be read.", labels=QUEUE_LABELS[:2]
        )
        by_priority = GaugeMetricFamily(
            "jobqueue_queue_ready_by_priority",
            "Waiting tasks per priority step (0 is the highest priority, Celery's Redis priority steps).",
            labels=[*QUEUE_LABELS, "priority"],
        )
        dead_letters = GaugeMetricFamily(
            "jobqueue_dead_letters",
            "Messages in the queue's dead-letter list: tasks that failed for good or could not run.",
            labels=QUEUE_LABELS,
        )
        with self._lock:
            for (namespace, jobqueue), queues in sorted(self._queues.items()):
                for queue, series in sorted(queues.items()):
                    labels = [namespace, jobqueue, queue]
                    if series.ready is not None and series.in_flight is not None:
                        depth.add_metric([*labels, "ready"], series.ready)
                        depth.add_metric([*labels, "in_flight"], series.in_flight)
                    if series.ready == 0:
                        age.add_metric(labels, 0.0)
                    elif series.oldest_age_seconds is not None:
                        age.add_metric(labels, series.oldest_age_seconds)
                    if series.ready is not None:
                        current = series.oldest_age_source if series.ready else None
                        for source in oldest.SOURCES:
                            age_source.add_metric([*labels, source], 1.0 if source == current else 0.0)
                    workers.add_metric([*labels, "desired"], series.desired)
                    workers.add_metric([*labels, "current"], series.current)
                    workers.add_metric([*labels, "ready"], series.ready_workers)
                    for step, count in series.ready_by_priority:
                        by_priority.add_metric([*labels, str(step)], count)
                    if series.dead_letters is not None:
                        dead_letters.add_metric(labels, series.dead_letters)
                up.add_metric([namespace, jobqueue], 1.0 if self._broker_up.get((namespace, jobqueue)) else 0.0)
            for (namespace, jobqueue), counts in sorted(self._decisions.items()):
                for (queue, direction, reason), count in sorted(counts.items()):
                    decisions.add_metric([namespace, jobqueue, queue, direction, reason], count)
            extra = [*self._collect_targets_and_health(), *self._collect_delivery()]
        yield from (depth, age, age_source, workers, decisions, up, by_priority, dead_letters, *extra)

    def _collect_delivery(self) -> list[Metric]:
        """Redeliveries, unserved queues and the broker's memory (called under the lock)."""
        redelivered = CounterMetricFamily(
            "jobqueue_tasks_redelivered",
            "Tasks of a dead worker (its Pod deleted, its container restarted, or its node gone) put back on their "
            "queue.",
            labels=[*QUEUE_LABELS, "reason"],
        )
        unserved = GaugeMetricFamily(
            "jobqueue_unserved_queue_tasks",
            "Tasks waiting in a broker queue that no queue of the JobQueue serves (queue: that broker queue).",
            labels=QUEUE_LABELS,
        )
        used = GaugeMetricFamily(
            "jobqueue_broker_used_memory_bytes", "Memory the broker's Redis uses.", labels=QUEUE_LABELS[:2]
        )
        limit = GaugeMetricFamily(
            "jobqueue_broker_max_memory_bytes",
            "The broker's maxmemory (0: no limit): at it, Redis refuses new tasks.",
            labels=QUEUE_LABELS[:2],
        )
        for (namespace, jobqueue), counts in sorted(self._redelivered.items()):
            for (queue, reason), count in sorted(counts.items()):
                redelivered.add_metric([namespace, jobqueue, queue, reason], count)
        for (namespace, jobqueue), series in sorted(self._brokers.items()):
            for queue, tasks in sorted((series.unserved or {}).items()):
                unserved.add_metric([namespace, jobqueue, queue], tasks)
            if series.used_memory is not None and series.max_memory is not None:
                used.add_metric([namespace, jobqueue], series.used_memory)
                limit.add_metric([namespace, jobqueue], series.max_memory)
        return [redelivered, unserved, used, limit, *self._collect_replication()]

    def _collect_replication(self) -> list[Metric]:
        """A Sentinel-managed broker's replicas, replication lag and failovers (called under the lock)."""
        replicas = GaugeMetricFamily(
            "jobqueue_broker_replicas",
            "Replicas of a Sentinel-managed broker by state: in_sync (within min-replicas-max-lag of the master), "
            "lagging, syncing (taking a full copy) or down (known to the Sentinels, not streamed to).",
            labels=[*QUEUE_LABELS[:2], "state"],
        )
        lag = GaugeMetricFamily(
            "jobqueue_broker_replication_lag_seconds",
            "The largest replication lag of the broker's replicas: seconds since a replica last acknowledged "
            "the master's stream (what min-replicas-max-lag compares).",
            labels=QUEUE_LABELS[:2],
        )
        behind = GaugeMetricFamily(
            "jobqueue_broker_replication_lag_bytes",
            "The largest distance, in bytes, between the master's replication offset and a replica's: what a "
            "failover to that replica would lose now.",
            labels=QUEUE_LABELS[:2],
        )
        availability = GaugeMetricFamily(
            "jobqueue_broker_availability",
            "The reason of a Sentinel-managed broker's BrokerAvailable condition: 1 for the current one, 0 for the "
            "others (BrokerReplicated is the healthy one).",
            labels=[*QUEUE_LABELS[:2], "reason"],
        )
        failovers = CounterMetricFamily(
            "jobqueue_broker_failovers",
            "Changes of a Sentinel-managed broker's master the operator saw (Sentinel failovers), since it started.",
            labels=QUEUE_LABELS[:2],
        )
        for (namespace, jobqueue), series in sorted(self._brokers.items()):
            for state, count in sorted((series.replicas or {}).items()):
                replicas.add_metric([namespace, jobqueue, state], count)
            if series.lag_seconds is not None:
                lag.add_metric([namespace, jobqueue], series.lag_seconds)
            if series.lag_bytes is not None:
                behind.add_metric([namespace, jobqueue], series.lag_bytes)
            if series.availability is not None:
                for reason in broker_replication.AVAILABILITY_REASONS:
                    current = 1.0 if reason == series.availability else 0.0
                    availability.add_metric([namespace, jobqueue, reason], current)
        for (namespace, jobqueue), count in sorted(self._failovers.items()):
            failovers.add_metric([namespace, jobqueue], count)
        # Only with a Sentinel-managed broker: without one the families are not exported at all (no HELP).
        return [family for family in (replicas, lag, behind, availability, failovers) if family.samples]

    def _collect_targets_and_health(self) -> list[Metric]:
        """The spec's targets, the status conditions and the worker restarts (called under the lock)."""
        threshold = GaugeMetricFamily(
            "jobqueue_queue_backlog_alert_threshold",
            "The queue's alerts.backlogThreshold: waiting tasks above which JobQueueBacklogHigh fires.",
            labels=QUEUE_LABELS,
        )
        wait = GaugeMetricFamily(
            "jobqueue_queue_target_wait_seconds",
            "The queue's autoscaling.targetWaitSeconds: how long a task should wait at most.",
            labels=QUEUE_LABELS,
        )
        min_replicas = GaugeMetricFamily(
            "jobqueue_autoscaling_min_replicas", "The queue's autoscaling.minReplicas.", labels=QUEUE_LABELS
        )
        max_replicas = GaugeMetricFamily(
            "jobqueue_autoscaling_max_replicas", "The queue's autoscaling.maxReplicas.", labels=QUEUE_LABELS
        )
        condition = GaugeMetricFamily(
            "jobqueue_status_condition",
            "The JobQueue's status conditions: 1 for the condition's current status, 0 for the other two.",
            labels=[*QUEUE_LABELS[:2], "condition", "status"],
        )
        restarts = CounterMetricFamily(
            "jobqueue_worker_restarts",
            "Worker container restarts seen in the queue's Pod status (restartCount increases).",
            labels=QUEUE_LABELS,
        )
        oom_kills = CounterMetricFamily(
            "jobqueue_worker_oom_kills",
            "Worker container restarts whose last termination reason was OOMKilled.",
            labels=QUEUE_LABELS,
        )
        for (namespace, jobqueue), targets in sorted(self._targets.items()):
            state = self._restarts.get((namespace, jobqueue))
            for queue, target in sorted(targets.items()):
                labels = [namespace, jobqueue, queue]
                if target.backlog_threshold is not None:
                    threshold.add_metric(labels, target.backlog_threshold)
                if target.target_wait_seconds is not None:
                    wait.add_metric(labels, target.target_wait_seconds)
                if target.min_replicas is not None:
                    min_replicas.add_metric(labels, target.min_replicas)
                if target.max_replicas is not None:
                    max_replicas.add_metric(labels, target.max_replicas)
                restarts.add_metric(labels, state.restarts[queue] if state else 0)
                oom_kills.add_metric(labels, state.oom_kills[queue] if state else 0)
        for (namespace, jobqueue), conditions in sorted(self._conditions.items()):
            for kind, value in sorted(conditions.items()):
                for status in CONDITION_STATUSES:
                    condition.add_metric([namespace, jobqueue, kind, status], 1.0 if value == status else 0.0)
        return [threshold, wait, min_replicas, max_replicas, condition, restarts, oom_kills]


def serve(metrics: OperatorMetrics, port: int, address: str = "0.0.0.0") -> WSGIServer:
    """Serve /metrics in a daemon thread; the server, to shut it down."""
    server, _ = start_http_server(port, address, registry=metrics.registry)
    return server
