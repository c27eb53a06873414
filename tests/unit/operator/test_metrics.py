"""metrics.py: the operator's series, rendered from per-JobQueue snapshots."""

from __future__ import annotations

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_operator.metrics import OperatorMetrics, QueueSeries

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def _samples(metrics: OperatorMetrics) -> Samples:
    text = generate_latest(metrics.registry).decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def _labels(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_every_queue_has_depth_age_and_worker_series_even_at_zero_workers() -> None:
    metrics = OperatorMetrics()
    idle = QueueSeries(ready=0, in_flight=0, oldest_age_seconds=None, desired=0, current=0, ready_workers=0)
    busy = QueueSeries(ready=4, in_flight=2, oldest_age_seconds=7.5, desired=3, current=2, ready_workers=1)
    metrics.set_queues("ns", "media", {"low": idle, "high": busy}, broker_up=True)
    got = _samples(metrics)
    low = {"namespace": "ns", "jobqueue": "media", "queue": "low"}
    high = {**low, "queue": "high"}
    assert got[("jobqueue_queue_depth", _labels(**low, state="ready"))] == 0
    assert got[("jobqueue_queue_depth", _labels(**high, state="ready"))] == 4
    assert got[("jobqueue_queue_depth", _labels(**high, state="in_flight"))] == 2
    assert got[("jobqueue_queue_oldest_task_age_seconds", _labels(**low))] == 0
    assert got[("jobqueue_queue_oldest_task_age_seconds", _labels(**high))] == 7.5
    assert got[("jobqueue_workers", _labels(**low, kind="desired"))] == 0
    assert got[("jobqueue_workers", _labels(**high, kind="ready"))] == 1
    assert got[("jobqueue_broker_up", _labels(namespace="ns", jobqueue="media"))] == 1


def test_an_unread_broker_gives_broker_up_zero_and_no_depth() -> None:
    metrics = OperatorMetrics()
    unknown = QueueSeries(ready=None, in_flight=None, oldest_age_seconds=None, desired=2, current=2, ready_workers=2)
    metrics.set_queues("ns", "media", {"low": unknown}, broker_up=False)
    got = _samples(metrics)
    assert got[("jobqueue_broker_up", _labels(namespace="ns", jobqueue="media"))] == 0
    assert not [key for key in got if key[0].startswith("jobqueue_queue_")]
    assert got[("jobqueue_workers", _labels(namespace="ns", jobqueue="media", queue="low", kind="current"))] == 2


def test_decisions_count_and_vanish_with_their_queue_and_jobqueue() -> None:
    metrics = OperatorMetrics()
    series = QueueSeries(0, 0, None, 1, 1, 1)
    metrics.set_queues("ns", "media", {"low": series, "high": series}, broker_up=True)
    metrics.count_decision("ns", "media", "low", "up", "Backlog")
    metrics.count_decision("ns", "media", "low", "up", "Backlog")
    metrics.count_decision("ns", "media", "high", "down", "IdleToZero")
    name = "jobqueue_scaling_decisions_total"
    low = _labels(namespace="ns", jobqueue="media", queue="low", direction="up", reason="Backlog")
    assert _samples(metrics)[(name, low)] == 2

    metrics.set_queues("ns", "media", {"low": series}, broker_up=True)  # "high" removed from the spec
    assert not [key for key in _samples(metrics) if ("queue", "high") in key[1]]
    assert _samples(metrics)[(name, low)] == 2

    metrics.forget("ns", "media")
    assert not [key for key in _samples(metrics) if ("jobqueue", "media") in key[1]]


def test_durations_are_histograms_of_the_registry_not_globals() -> None:
    first, second = OperatorMetrics(), OperatorMetrics()
    first.tick_seconds.observe(0.02)
    first.reconcile_seconds.observe(0.3)
    assert _samples(first)[("jobqueue_autoscaler_tick_duration_seconds_count", ())] == 1
    assert _samples(first)[("jobqueue_reconcile_duration_seconds_count", ())] == 1
    assert _samples(second)[("jobqueue_autoscaler_tick_duration_seconds_count", ())] == 0
