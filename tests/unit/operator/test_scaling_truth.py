"""What the tick says on day two (issue 19, points 4 and 5): a paused JobQueue says so with the tasks that
wait, the status carries the time it was observed (refreshed without a write storm), and the backlog counts
the tasks of queues that left the spec and still drain."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from jobqueue_operator import broker, naming, scaling, status
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.models import JobQueue, JobQueueStatus
from jobqueue_operator.reasons import Reason
from jobqueue_operator.scaling import decide
from jobqueue_operator.scaling.decide import Seen
from jobqueue_worker import contract
from tests.unit.operator.fake_kube import FakeKube

T0 = decide.epoch("2030-01-01T00:00:00Z")


def _body(paused: bool = False, draining: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    block = {"minReplicas": 0, "maxReplicas": 4}
    body: dict[str, Any] = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "broker": {"external": {"urlSecretRef": {"name": "url", "key": "url"}}},
            "queues": [{"name": "q", "autoscaling": block}, {"name": "fixed", "replicas": 1}],
        },
    }
    if paused:
        body["metadata"]["annotations"] = {decide.PAUSE_ANNOTATION: "true"}
    if draining:
        body["status"] = {"drainingQueues": draining}
    return body


def _deployment(queue: str, replicas: int = 0) -> dict[str, Any]:
    return {"metadata": {"name": f"m-{queue}-worker"}, "spec": {"replicas": replicas}, "status": {}}


def _seen(body: dict[str, Any], counts: dict[str, broker.QueueCounts], error: str | None = None) -> Seen:
    deployments = {name: _deployment(name) for name in ("q", "fixed", "old")}
    return Seen(JobQueue.from_body(body), T0, counts, error, deployments)


def _scaling_active(plan: decide.TickPlan) -> status.Verdict:
    return plan.conditions[status.SCALING_ACTIVE]


def test_a_paused_jobqueue_says_so_how_to_resume_and_how_many_tasks_wait() -> None:
    counts = {"q": broker.QueueCounts(16, 0), "fixed": broker.QueueCounts(2, 1)}
    plan = decide.plan(_seen(_body(paused=True), counts), {}, _body(paused=True))
    state, reason, message = _scaling_active(plan)
    assert (state, reason) == ("False", Reason.AUTOSCALING_PAUSED)
    assert f"kubectl annotate jobqueue m -n ns {decide.PAUSE_ANNOTATION}-" in message
    assert message.endswith("; 16 tasks wait meanwhile (q 16)")  # not fixed's: its own workers run them
    assert plan.scales == []  # held at 0 with 16 waiting
    (event,) = [e for e in plan.events if e.reason == Reason.AUTOSCALING_PAUSED]
    assert event.type == "Normal"  # someone's choice, not a failure


def test_a_paused_jobqueue_with_nothing_waiting_or_an_unread_broker() -> None:
    idle = decide.plan(_seen(_body(paused=True), {"q": broker.QueueCounts(0, 0)}), {}, _body(paused=True))
    assert "wait" not in _scaling_active(idle)[2].split("; to resume")[1]
    blind = decide.plan(_seen(_body(paused=True), {}, error="down"), {}, _body(paused=True))
    assert _scaling_active(blind)[1] == Reason.AUTOSCALING_PAUSED
    assert "the tasks waiting are unknown" in _scaling_active(blind)[2]


def test_resumed_the_condition_is_true_again() -> None:
    plan = decide.plan(_seen(_body(), {"q": broker.QueueCounts(0, 0), "fixed": broker.QueueCounts(0, 0)}), {}, _body())
    assert _scaling_active(plan)[:2] == ("True", Reason.METRICS_AVAILABLE)


def test_the_backlog_counts_the_tasks_of_draining_queues() -> None:
    body = _body(draining=[{"name": "old", "deployment": "m-old-worker", "tasks": 16}])
    counts = {"q": broker.QueueCounts(3, 1), "fixed": broker.QueueCounts(0, 0), "old": broker.QueueCounts(14, 2)}
    plan = decide.plan(_seen(body, counts), {}, body)
    assert plan.draining == {"old": 16}
    written = status.autoscaler(plan.depths, plan.unserved, plan.conditions, [], 1, "x", draining=plan.draining)
    assert written.backlog == 3 + 1 + 14 + 2
    assert "old" not in {q.name for q in written.queues}  # the reconciler's drainingQueues lists it
    assert "drainingQueues" not in written.to_body()  # ... and it alone writes that field


def test_an_unread_draining_queue_leaves_the_backlog_blank() -> None:
    depths = {"q": status.QueueDepth(1, 0)}
    assert status.autoscaler(depths, [], {}, [], 1, "x", draining={"old": None}).backlog is None
    assert status.autoscaler(depths, [], {}, [], 1, "x", draining={"old": 4}).backlog == 5


def _computed(backlog: int) -> JobQueueStatus:
    return status.autoscaler({"q": status.QueueDepth(backlog, 0)}, [], {}, [], 1, "2030-01-01T00:00:00Z")


def test_the_observed_time_is_refreshed_at_most_every_period_while_nothing_changes() -> None:
    first = decide.observed(_computed(1), None, T0)
    assert first["lastObservedTime"] == "2030-01-01T00:00:00Z"
    quiet = decide.observed(_computed(1), first, T0 + status.OBSERVED_REFRESH_SECONDS - 1)
    assert quiet == first  # equal to the last write: nothing is written
    due = decide.observed(_computed(1), first, T0 + status.OBSERVED_REFRESH_SECONDS)
    assert due["lastObservedTime"] == decide.rfc3339(T0 + status.OBSERVED_REFRESH_SECONDS)


def test_a_changed_status_carries_a_fresh_observed_time() -> None:
    first = decide.observed(_computed(1), None, T0)
    changed = decide.observed(_computed(2), first, T0 + 5)
    assert changed["lastObservedTime"] == decide.rfc3339(T0 + 5)
    assert changed["backlog"] == 2


URL = "redis://:p@h:6379/0"


def _kube() -> FakeKube:
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(URL.encode()).decode()}
    for queue, steps in (("q", "0,3,6,9"), ("old", "0,5")):
        labels = {naming.QUEUE_LABEL: queue, naming.JOBQUEUE_LABEL: "m", naming.COMPONENT_LABEL: naming.WORKER}
        env = [{"name": contract.Env.PRIORITY_STEPS, "value": steps}]
        kube.objects[("Deployment", f"m-{queue}-worker")] = {
            "metadata": {"name": f"m-{queue}-worker", "labels": labels, "resourceVersion": "1"},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "worker", "env": env}]}}},
            "status": {"replicas": 1, "readyReplicas": 1},
        }
    return kube


def test_a_tick_reads_a_draining_queue_with_its_workers_priority_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    read: list[broker.QueueKeys] = []

    def read_counts(url: str, keys: list[broker.QueueKeys], **_: Any) -> dict[str, broker.QueueCounts]:
        read.extend(keys)
        return {key.name: broker.QueueCounts(5, 1) for key in keys}

    monkeypatch.setattr(broker, "read_counts", read_counts)
    body = _body(draining=[{"name": "old", "deployment": "m-old-worker", "tasks": 6}])
    body["spec"]["queues"] = body["spec"]["queues"][:1]
    kube = _kube()
    scaling.tick(kube, body, scaling.Memory(), OperatorMetrics())
    assert {key.name: key.steps for key in read}["old"] == (0, 5)
    written = kube.status[naming.AUTOSCALER_FIELD_MANAGER]
    assert written["backlog"] == 12
    assert written["lastObservedTime"]
