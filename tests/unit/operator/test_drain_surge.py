"""A drain keeps a queue serving: its PodDisruptionBudget (build/workers.py `budget_limit`) and the
autoscaler's surge for workers on a node being emptied (scaling/decide.py `with_surge`)."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import broker, naming, nodes
from jobqueue_operator.build import workers
from jobqueue_operator.models import JobQueue, Queue
from jobqueue_operator.scaling import decide as scaling
from jobqueue_operator.scaling.decide import Seen

NOW = 1_800_000_000.0
PAUSED = {"metadata": {"annotations": {scaling.PAUSE_ANNOTATION: "true"}}}


def node(name: str, cordoned: bool = False, taints: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": [{"key": key, "effect": "NoSchedule"} for key in taints]}
    if cordoned:
        spec["unschedulable"] = True
    return {"metadata": {"name": name}, "spec": spec, "status": {"conditions": [{"type": "Ready", "status": "True"}]}}


VIEW = nodes.Snapshot(nodes={"old": node("old", cordoned=True), "new": node("new")}, at=NOW)


def _jobqueue(min_replicas: int = 1) -> JobQueue:
    block = {"minReplicas": min_replicas, "maxReplicas": 5}
    return JobQueue.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "generation": 1},
            "spec": {"image": "i", "app": "a", "queues": [{"name": "q", "autoscaling": block}]},
        }
    )


def _deployment(replicas: int) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-q-worker"},
        "spec": {"replicas": replicas},
        "status": {"replicas": replicas, "readyReplicas": replicas},
    }


def _pods(jq: JobQueue, *placed: tuple[str, str], deleting: tuple[str, ...] = ()) -> dict[str, Any]:
    pods = {}
    for name, on in placed:
        metadata: dict[str, Any] = {"name": name, "labels": naming.labels(jq, naming.WORKER, "q")}
        if name in deleting:
            metadata["deletionTimestamp"] = "2030-01-01T00:00:00Z"
        pods[name] = {"metadata": metadata, "spec": {"nodeName": on}}
    return pods


def _seen(jq: JobQueue, replicas: int, pods: dict[str, Any], view: nodes.Snapshot | None, busy: int = 1) -> Seen:
    counts = {"q": broker.QueueCounts(0, busy)}
    return Seen(jq, NOW, counts, None, {"q": _deployment(replicas)}, worker_pods=pods, node_view=view)


def test_a_node_is_leaving_when_cordoned_or_marked_for_removal_by_the_cluster_autoscaler() -> None:
    view = nodes.Snapshot(
        nodes={
            "cordoned": node("cordoned", cordoned=True),
            "draining": node("draining", taints=("node.kubernetes.io/unschedulable",)),
            "autoscaled": node("autoscaled", taints=("ToBeDeletedByClusterAutoscaler",)),
            "fine": node("fine", taints=("dedicated",)),
        }
    )
    assert [n for n in ("cordoned", "draining", "autoscaled", "fine", "missing") if nodes.leaving(view, n)] == [
        "cordoned",
        "draining",
        "autoscaled",
    ]


def test_the_only_worker_on_a_cordoned_node_gets_a_replacement_first() -> None:
    jq = _jobqueue()
    plan = scaling.plan(_seen(jq, 1, _pods(jq, ("w1", "old")), VIEW), {}, {})
    assert [(s.current, s.decision.replicas) for s in plan.scales] == [(1, 2)]
    assert "+1 while 1 worker(s) leave a node being drained" in plan.scales[0].decision.message
    assert plan.memory["q"].leaving == 1


def test_the_surge_holds_while_the_worker_is_still_there_even_between_pod_reads() -> None:
    jq = _jobqueue()
    both = _pods(jq, ("w1", "old"), ("w2", "new"))
    first = scaling.plan(_seen(jq, 2, both, VIEW), {}, {})
    assert first.scales == []  # 1 planned without the leaving worker, plus 1 for it: the 2 it has
    unread = scaling.plan(_seen(jq, 2, {}, None), first.memory, {})
    assert unread.scales == []  # no Pods read this tick: the surge is remembered, not dropped
    assert unread.memory["q"].leaving == 1


def test_the_surge_ends_once_the_evicted_worker_is_being_deleted() -> None:
    jq = _jobqueue()
    gone = _pods(jq, ("w1", "old"), ("w2", "new"), deleting=("w1",))
    plan = scaling.plan(_seen(jq, 2, gone, VIEW, busy=0), {}, {})
    assert plan.memory["q"].leaving == 0
    assert [s.decision.replicas for s in plan.scales] == [1]  # idle: back to minReplicas


def test_a_paused_queue_never_grows_from_its_own_surge() -> None:
    jq = _jobqueue()
    pods = _pods(jq, ("w1", "old"), ("w2", "new"))
    plan = scaling.plan(_seen(jq, 2, pods, VIEW), {}, PAUSED)
    again = scaling.plan(_seen(jq, 2, pods, VIEW), plan.memory, PAUSED)
    assert plan.scales == again.scales == []


def test_a_queue_going_to_zero_gets_no_surge() -> None:
    jq = _jobqueue(min_replicas=0)
    plan = scaling.plan(_seen(jq, 1, _pods(jq, ("w1", "old")), VIEW, busy=0), {}, {})
    assert [s.decision.replicas for s in plan.scales] == [0]


@pytest.mark.parametrize(
    ("queue", "limit"),
    [
        ({"autoscaling": {"minReplicas": 1}}, {"minAvailable": 1}),
        ({"autoscaling": {"minReplicas": 0}}, {"maxUnavailable": 1}),
        ({"autoscaling": {"enabled": False, "minReplicas": 1}}, {"maxUnavailable": 1}),
        ({}, {"maxUnavailable": 1}),  # one fixed replica: nothing would surge it, minAvailable would block
        ({"replicas": 3}, {"maxUnavailable": 1}),
        ({"autoscaling": {"minReplicas": 3}, "disruption": {"maxUnavailable": "50%"}}, {"maxUnavailable": "50%"}),
        ({"disruption": {"maxUnavailable": 0}}, {"maxUnavailable": 0}),
    ],
)
def test_the_budget_keeps_one_serving_where_the_autoscaler_can_surge(queue: dict[str, Any], limit: Any) -> None:
    assert workers.budget_limit(Queue.model_validate({"name": "q", **queue})) == limit
