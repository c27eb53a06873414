"""The operator's series for alerting: per-queue targets from the spec, conditions, worker restarts."""

from __future__ import annotations

import time
from typing import Any

from jobqueue_operator.metrics import OperatorMetrics, QueueSeries
from jobqueue_operator.models import JobQueueSpec
from tests.unit.operator.test_metrics import _samples


def _q(queue: str, **extra: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "ns", "jobqueue": "media", "queue": queue, **extra}.items()))


SPEC = JobQueueSpec.model_validate(
    {
        "image": "worker:dev",
        "app": "app:celery",
        "queues": [
            {
                "name": "images",
                "alerts": {"backlogThreshold": 500},
                "autoscaling": {"minReplicas": 1, "maxReplicas": 8, "targetWaitSeconds": 30},
            },
            {"name": "fixed", "replicas": 2},
        ],
    }
)


def test_targets_are_exported_only_where_the_spec_sets_them() -> None:
    metrics = OperatorMetrics()
    metrics.set_spec("ns", "media", SPEC)
    got = _samples(metrics)
    assert got[("jobqueue_queue_backlog_alert_threshold", _q("images"))] == 500
    assert got[("jobqueue_queue_target_wait_seconds", _q("images"))] == 30
    assert got[("jobqueue_autoscaling_min_replicas", _q("images"))] == 1
    assert got[("jobqueue_autoscaling_max_replicas", _q("images"))] == 8
    fixed = {name for name, labels in got if labels == _q("fixed")}
    assert fixed == {"jobqueue_worker_restarts_total", "jobqueue_worker_oom_kills_total"}
    metrics.forget("ns", "media")
    assert not [key for key in _samples(metrics) if key[0].startswith("jobqueue_queue_backlog")]


def test_conditions_are_one_hot_over_true_false_unknown() -> None:
    metrics = OperatorMetrics()
    metrics.set_conditions("ns", "media", {"Ready": "False", "BrokerReady": "True"})
    got = _samples(metrics)

    def value(condition: str, status: str) -> float:
        labels = (("condition", condition), ("jobqueue", "media"), ("namespace", "ns"), ("status", status))
        return got[("jobqueue_status_condition", labels)]

    assert [value("Ready", s) for s in ("true", "false", "unknown")] == [0, 1, 0]
    assert [value("BrokerReady", s) for s in ("true", "false", "unknown")] == [1, 0, 0]


def _pod(
    uid: str, queue: str, restarts: int, reason: str | None = None, created: float | None = None
) -> dict[str, Any]:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created if created is not None else time.time() + 5))
    status: dict[str, Any] = {"name": "worker", "restartCount": restarts}
    if reason:
        status["lastState"] = {"terminated": {"reason": reason, "exitCode": 137}}
    return {
        "metadata": {"uid": uid, "creationTimestamp": stamp, "labels": {"jobqueue.dev/queue": queue}},
        "status": {"containerStatuses": [status]},
    }


def test_restarts_count_increases_of_restart_count_and_oom_kills_by_last_reason() -> None:
    metrics = OperatorMetrics()
    metrics.set_spec("ns", "media", SPEC)
    metrics.observe_worker_pods("ns", "media", [_pod("a", "images", 0)])
    metrics.observe_worker_pods("ns", "media", [_pod("a", "images", 2, "OOMKilled")])
    metrics.observe_worker_pods("ns", "media", [_pod("a", "images", 3, "Error"), _pod("b", "images", 1, "OOMKilled")])
    got = _samples(metrics)
    assert got[("jobqueue_worker_restarts_total", _q("images"))] == 4
    assert got[("jobqueue_worker_oom_kills_total", _q("images"))] == 2
    # A Pod gone and a Pod that scaled away do not make the counters go down.
    metrics.observe_worker_pods("ns", "media", [])
    assert _samples(metrics)[("jobqueue_worker_restarts_total", _q("images"))] == 4


def test_a_pod_older_than_the_operator_is_a_baseline_not_new_restarts() -> None:
    metrics = OperatorMetrics()
    metrics.set_spec("ns", "media", SPEC)
    old = time.time() - 3600
    metrics.observe_worker_pods("ns", "media", [_pod("a", "images", 7, "OOMKilled", created=old)])
    assert _samples(metrics)[("jobqueue_worker_restarts_total", _q("images"))] == 0
    metrics.observe_worker_pods("ns", "media", [_pod("a", "images", 8, "OOMKilled", created=old)])
    assert _samples(metrics)[("jobqueue_worker_oom_kills_total", _q("images"))] == 1


def test_waiting_tasks_by_priority_step() -> None:
    metrics = OperatorMetrics()
    series = QueueSeries(5, 0, 1.0, 1, 1, 1, ready_by_priority=((0, 2), (3, 0), (6, 0), (9, 3)))
    metrics.set_queues("ns", "media", {"images": series}, broker_up=True)
    got = _samples(metrics)
    assert got[("jobqueue_queue_ready_by_priority", _q("images", priority="0"))] == 2
    assert got[("jobqueue_queue_ready_by_priority", _q("images", priority="9"))] == 3
