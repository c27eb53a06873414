"""scaling.tick(): observe -> decide -> converge against the fake API server and a fake broker read."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from jobqueue_operator import autoscaling, broker, naming, podmetrics, scaling
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.reasons import Reason
from tests.unit.operator.fake_kube import FakeKube

URL = "redis://:p@h:6379/0"


def _body() -> dict[str, Any]:
    block = {"minReplicas": 0, "maxReplicas": 4, "scaleDownStabilizationSeconds": 0, "idleSecondsBeforeZero": 0}
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "broker": {"external": {"urlSecretRef": {"name": "url", "key": "url"}}},
            "queues": [{"name": "q", "concurrency": 1, "autoscaling": block}],
        },
    }


def _kube(replicas: int) -> FakeKube:
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(URL.encode()).decode()}
    labels = {
        naming.QUEUE_LABEL: "q",
        naming.JOBQUEUE_LABEL: "m",
        naming.COMPONENT_LABEL: naming.WORKER,
        naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME,
    }
    kube.objects[("Deployment", "m-q-worker")] = {
        "metadata": {"name": "m-q-worker", "labels": labels, "resourceVersion": "1"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }
    kube.pods_by_selector = [
        {"metadata": {"name": f"w{i}", "labels": labels}, "status": {"podIP": f"10.0.0.{i}"}} for i in range(replicas)
    ]
    return kube


@pytest.fixture
def waiting(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What the broker holds (ready, in flight), or an error to raise."""
    state: dict[str, Any] = {"ready": 0, "in_flight": 0, "error": None}

    def read_counts(url: str, keys: list[broker.QueueKeys], **_: Any) -> dict[str, broker.QueueCounts]:
        assert url == URL
        if state["error"]:
            raise broker.BrokerError(state["error"])
        return {k.name: broker.QueueCounts(state["ready"], state["in_flight"]) for k in keys}

    monkeypatch.setattr(broker, "read_counts", read_counts)
    monkeypatch.setattr(
        podmetrics, "busy", lambda pods, concurrency: {p["metadata"]["name"]: i for i, p in enumerate(pods)}
    )
    return state


def test_a_backlog_scales_up_at_once_and_says_why(waiting: dict[str, Any]) -> None:
    kube, memory, metrics = _kube(0), scaling.Memory(), OperatorMetrics()
    waiting["ready"] = 3
    scaling.tick(kube, _body(), memory, metrics)
    assert kube.scales == [("m-q-worker", 3)]
    assert any(reason == Reason.SCALED_UP and "0 -> 3" in message for _, reason, message in kube.events)
    status = kube.status[naming.AUTOSCALER_FIELD_MANAGER]
    assert status["backlog"] == 3
    assert status["queues"][0]["lastScaleTime"]
    assert status["conditions"][0]["type"] == "ScalingActive"


def test_a_scale_down_marks_the_idle_pods_first(waiting: dict[str, Any]) -> None:
    kube, memory = _kube(3), scaling.Memory()
    waiting["in_flight"] = 1  # w0 runs nothing, w1 one task, w2 two (the fake busy scrape)
    scaling.tick(kube, _body(), memory, OperatorMetrics())
    assert kube.scales == [("m-q-worker", 1)]
    annotate = [c for c in kube.calls if c.startswith("annotate")]
    assert kube.calls.index(annotate[-1]) < kube.calls.index("scale m-q-worker 1")
    costs = {pod: values[autoscaling.DELETION_COST_ANNOTATION] for pod, values in kube.annotations.items()}
    assert int(costs["w0"]) < int(costs["w1"]) < int(costs["w2"])


def test_an_unreadable_broker_holds_the_replicas_and_says_so(waiting: dict[str, Any]) -> None:
    kube, memory = _kube(2), scaling.Memory()
    waiting["error"] = "h:6379 cannot be read: timed out"
    scaling.tick(kube, _body(), memory, OperatorMetrics())
    assert kube.scales == []
    status = kube.status[naming.AUTOSCALER_FIELD_MANAGER]
    assert "backlog" not in status
    (condition,) = status["conditions"]
    assert (condition["status"], condition["reason"]) == ("False", Reason.METRICS_UNAVAILABLE)
    assert "timed out" in condition["message"]


def test_an_unchanged_tick_writes_no_status(waiting: dict[str, Any]) -> None:
    kube, memory = _kube(1), scaling.Memory()
    waiting["in_flight"] = 1
    scaling.tick(kube, _body(), memory, OperatorMetrics())
    writes = [c for c in kube.calls if c.startswith("status")]
    scaling.tick(kube, _body(), memory, OperatorMetrics())
    assert [c for c in kube.calls if c.startswith("status")] == writes


def test_the_tick_learns_how_long_the_queues_pods_take_to_start(waiting: dict[str, Any]) -> None:
    kube, memory = _kube(2), scaling.Memory()
    for i, pod in enumerate(kube.pods_by_selector):
        pod["metadata"].update(uid=f"uid-{i}", creationTimestamp="2030-01-01T00:00:00Z")
        ready = {"type": "Ready", "status": "True", "lastTransitionTime": f"2030-01-01T00:00:0{7 + i}Z"}
        pod["status"].update(conditions=[ready], containerStatuses=[{"name": "worker", "restartCount": 0}])
    scaling.tick(kube, _body(), memory, OperatorMetrics())
    assert [start.seconds for start in memory.queues["q"].learned.starts] == [7.0, 8.0]
