"""The operator's Prometheus metrics: one registry object, served on the operator's metrics port.

Per-JobQueue series are kept as a snapshot per (namespace, jobqueue) and rendered at scrape time, so a
JobQueue's series vanish when `forget` drops it and a queue's when a new snapshot no longer has it.
Every queue of the spec has series, also at zero workers. Labels are bounded: namespace, jobqueue, queue,
and the small enums state, kind, direction and reason; never Pod names.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Final
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

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


class OperatorMetrics(Collector):
    """The registry and everything in it; thread safe (kopf runs handlers in threads)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._lock = threading.Lock()
        self._queues: dict[Key, dict[str, QueueSeries]] = {}
        self._broker_up: dict[Key, bool] = {}
        self._decisions: dict[Key, Counter[tuple[str, str, str]]] = {}
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
        self.registry.register(self)

    def set_queues(self, namespace: str, jobqueue: str, queues: Mapping[str, QueueSeries], broker_up: bool) -> None:
        """Replace a JobQueue's snapshot; queues not in `queues` lose their series (decisions too)."""
        key = (namespace, jobqueue)
        with self._lock:
            self._queues[key] = dict(queues)
            self._broker_up[key] = broker_up
            counts = self._decisions.get(key, Counter())
            self._decisions[key] = Counter({k: v for k, v in counts.items() if k[0] in queues})

    def count_decision(self, namespace: str, jobqueue: str, queue: str, direction: str, reason: str) -> None:
        with self._lock:
            self._decisions.setdefault((namespace, jobqueue), Counter())[(queue, direction, reason)] += 1

    def forget(self, namespace: str, jobqueue: str) -> None:
        """Drop every series of a deleted JobQueue."""
        key = (namespace, jobqueue)
        with self._lock:
            self._queues.pop(key, None)
            self._broker_up.pop(key, None)
            self._decisions.pop(key, None)

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
            "Age of the oldest waiting task (0 when none waits); from the jobqueue_sent_at header.",
            labels=QUEUE_LABELS,
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
                    workers.add_metric([*labels, "desired"], series.desired)
                    workers.add_metric([*labels, "current"], series.current)
                    workers.add_metric([*labels, "ready"], series.ready_workers)
                up.add_metric([namespace, jobqueue], 1.0 if self._broker_up.get((namespace, jobqueue)) else 0.0)
            for (namespace, jobqueue), counts in sorted(self._decisions.items()):
                for (queue, direction, reason), count in sorted(counts.items()):
                    decisions.add_metric([namespace, jobqueue, queue, direction, reason], count)
        yield from (depth, age, workers, decisions, up)


def serve(metrics: OperatorMetrics, port: int, address: str = "0.0.0.0") -> WSGIServer:
    """Serve /metrics in a daemon thread; the server, to shut it down."""
    server, _ = start_http_server(port, address, registry=metrics.registry)
    return server
