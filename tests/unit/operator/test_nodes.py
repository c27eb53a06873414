"""A lost node: the pure check (nodes.py), the redelivery reason it gives (redelivery.py), the shared
read of the nodes (node_reads.py), and what one tick and one reconcile do with them."""

from __future__ import annotations

import base64
import datetime
from typing import Any

import pytest
from prometheus_client import generate_latest

from jobqueue_operator import broker, nodes, redelivery, scaling
from jobqueue_operator.broker_state import ManagedState
from jobqueue_operator.kube import KubeError
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.models import JobQueue
from jobqueue_operator.node_reads import RECENT_LOSS_SECONDS, NodeReads
from jobqueue_operator.reasons import Reason
from jobqueue_operator.reconcile import decide_broker, observe
from jobqueue_operator.reconcile.decide_broker import ManagedBroker
from jobqueue_operator.status import BrokerState
from jobqueue_worker import contract
from jobqueue_worker.restore import Restore, RestoreOutcome
from tests.unit.operator.fake_kube import FakeKube

NOW = 1_800_000_000.0
UNKNOWN_MESSAGE = "Kubelet stopped posting node status."


def stamp(epoch: float, micro: bool = True) -> str:
    moment = datetime.datetime.fromtimestamp(epoch, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def node(name: str, ready: str = "True", taints: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"taints": [{"key": key, "effect": "NoExecute"} for key in taints]},
        "status": {
            "conditions": [{"type": "Ready", "status": ready, "message": "Kubelet stopped posting node status."}]
        },
    }


def lease(name: str, renewed: float, duration: int | None = 40) -> dict[str, Any]:
    spec: dict[str, Any] = {"holderIdentity": name, "renewTime": stamp(renewed)}
    if duration is not None:
        spec["leaseDurationSeconds"] = duration
    return {"metadata": {"name": name, "namespace": nodes.LEASE_NAMESPACE}, "spec": spec}


def snapshot(*found: dict[str, Any], leases: tuple[dict[str, Any], ...] = (), grace: float = 20.0) -> nodes.Snapshot:
    return nodes.Snapshot(
        nodes={n["metadata"]["name"]: n for n in found},
        leases={item["metadata"]["name"]: item for item in leases},
        at=NOW,
        lease_grace=grace,
    )


# -- nodes.gone ---------------------------------------------------------------------------------------------


def test_a_node_that_renews_its_lease_and_is_ready_is_not_gone() -> None:
    view = snapshot(node("a"), leases=(lease("a", NOW - 9),))
    assert nodes.gone(view, "a") is None
    assert nodes.lost(view, ["a", ""]) == {}


def test_a_lease_not_renewed_for_longer_than_the_grace_says_the_node_is_gone() -> None:
    view = snapshot(node("a"), node("b"), leases=(lease("a", NOW - 21), lease("b", NOW - 20)))
    assert nodes.gone(view, "a") == "node a's kubelet has not renewed its Lease for 21s (more than 20s)"
    assert nodes.gone(view, "b") is None  # exactly at the grace: not yet
    assert nodes.lost(view, ["a", "b"]) == {"a": nodes.gone(view, "a")}


def test_the_grace_is_never_longer_than_the_leases_own_duration() -> None:
    view = snapshot(node("a"), node("b"), leases=(lease("a", NOW - 16, duration=15), lease("b", NOW - 16)))
    assert nodes.gone(view, "a") == "node a's kubelet has not renewed its Lease for 16s (more than 15s)"
    assert nodes.gone(view, "b") is None
    seconds = snapshot(node("c"), leases=(lease("c", NOW - 25, duration=None),))
    assert nodes.gone(seconds, "c") is not None  # no duration: the grace alone


def test_ready_unknown_the_unreachable_taint_and_a_missing_node_each_say_gone_and_why() -> None:
    view = snapshot(node("u", ready="Unknown"), node("t", taints=(nodes.UNREACHABLE_TAINT,)), node("n", ready="False"))
    assert nodes.gone(view, "u") == "node u is Ready Unknown (Kubelet stopped posting node status)"
    assert nodes.gone(view, "t") == f"node t has the {nodes.UNREACHABLE_TAINT} taint"
    assert nodes.gone(view, "missing") == "Node missing does not exist"
    assert nodes.gone(view, "n") is None  # NotReady: its kubelet still reports
    assert nodes.lost(None, ["u"]) == {}  # nothing read: nothing known to be gone


def test_a_lease_without_a_readable_renew_time_says_nothing() -> None:
    broken = {"metadata": {"name": "a"}, "spec": {"renewTime": "yesterday"}}
    assert nodes.gone(snapshot(node("a"), leases=(broken,)), "a") is None
    whole_seconds = lease("a", NOW - 30)
    whole_seconds["spec"]["renewTime"] = stamp(NOW - 30, micro=False)
    assert nodes.gone(snapshot(node("a"), leases=(whole_seconds,)), "a") is not None


def test_the_next_stale_moment_is_the_first_lease_to_expire_after_the_read() -> None:
    view = snapshot(node("a"), leases=(lease("a", NOW - 5), lease("b", NOW - 15), lease("c", NOW - 60)))
    assert nodes.next_stale(view) == pytest.approx(NOW + 5)  # b; c is stale already
    assert nodes.next_stale(snapshot(node("a"))) is None


# -- redelivery -------------------------------------------------------------------------------------------


def seen(pod: str, alive: bool = False, uid: str = "") -> redelivery.Seen:
    return redelivery.Seen(f"i-{pod}", "q", pod, uid or f"uid-{pod}", "ns", NOW - 100, alive, held=2)


def pod(name: str, on: str = "a", deleting: bool = False, running: bool = True) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "uid": f"uid-{name}"}
    if deleting:
        metadata["deletionTimestamp"] = stamp(NOW, micro=False)
    state = {"running": {"startedAt": stamp(NOW - 200, micro=False)}} if running else {"waiting": {}}
    return {
        "metadata": metadata,
        "spec": {"nodeName": on},
        "status": {"containerStatuses": [{"name": "worker", "state": state}]},
    }


def test_a_lapsed_worker_still_running_in_the_api_is_restored_only_when_its_node_is_gone() -> None:
    pods = {"m-q-worker-1": pod("m-q-worker-1", on="a"), "m-q-worker-2": pod("m-q-worker-2", on="b")}
    lapsed = [seen("m-q-worker-1"), seen("m-q-worker-2")]
    assert redelivery.dead(lapsed, pods, "ns", ["m-q-worker"]) == []  # no node known gone: kombu's timeout
    found = redelivery.dead(lapsed, pods, "ns", ["m-q-worker"], {"a": "node a is Ready Unknown"})
    assert found == [redelivery.Dead(lapsed[0], "node_lost", "a", "node a is Ready Unknown")]
    alive = [seen("m-q-worker-1", alive=True)]
    assert redelivery.dead(alive, pods, "ns", ["m-q-worker"], {"a": "gone"}) == []  # it beats: it runs
    assert set(redelivery.WHYS) == {"pod_deleted", "container_restarted", "node_lost"}


def test_the_api_servers_own_word_on_the_process_comes_first() -> None:
    pods = {"m-q-worker-1": pod("m-q-worker-1", running=False, deleting=True)}
    found = redelivery.dead([seen("m-q-worker-1")], pods, "ns", ["m-q-worker"], {"a": "gone"})
    assert [dead.why for dead in found] == ["pod_deleted"]


def test_pods_on_a_gone_node_are_deleted_once_nothing_of_them_beats() -> None:
    pods = {
        "w-held": pod("w-held"),  # its worker's heartbeat lapsed: its tasks go back, then it goes
        "w-beating": pod("w-beating"),  # cut off from its kubelet only: it still reaches Redis
        "w-new": pod("w-new", running=False),  # a replacement bound to the node before it was known gone
        "w-deleting": pod("w-deleting", deleting=True),  # asked already
        "w-elsewhere": pod("w-elsewhere", on="b"),
    }
    incarnations = [seen("w-held"), seen("w-beating", alive=True)]
    found = redelivery.on_lost_nodes(pods, incarnations, {"a": "node a is Ready Unknown"})
    assert found == [
        redelivery.LostPod("w-held", "a", "node a is Ready Unknown"),
        redelivery.LostPod("w-new", "a", "node a is Ready Unknown"),
    ]
    assert redelivery.on_lost_nodes(pods, incarnations, {}) == []


# -- node_reads -------------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


def test_the_nodes_are_read_once_per_interval_and_again_when_a_lease_would_turn_stale() -> None:
    kube, clock = FakeKube(node_list=[node("a")], lease_list=[lease("a", NOW - 12)]), Clock()
    reads = NodeReads(kube, max_age=5.0, clock=clock)
    first = reads.snapshot()
    assert first is not None
    assert nodes.gone(first, "a") is None
    clock.now += 4
    assert reads.snapshot() is first  # every JobQueue's tick within the interval shares the read
    kube.lease_list = []  # what the next read would see
    assert reads.reads == 1
    clock.now = NOW + 5
    assert reads.snapshot() is not first
    # A Lease 17 s old at the read turns stale 3 s later: read again then, not at the end of the interval.
    kube.lease_list = [lease("a", NOW + 10 - 17)]
    clock.now = NOW + 10
    reads.snapshot()
    clock.now = NOW + 13.5
    late = reads.snapshot()
    assert reads.reads == 4
    assert late is not None
    assert nodes.gone(late, "a") is not None


def test_a_failed_read_is_no_node_known_gone_and_is_tried_again_after_the_interval() -> None:
    kube, clock = FakeKube(nodes_refused='nodes is forbidden: User "x" cannot list resource "nodes"'), Clock()
    reads = NodeReads(kube, max_age=5.0, clock=clock)
    assert reads.snapshot() is None
    assert reads.snapshot() is None
    assert reads.reads == 1
    kube.nodes_refused, kube.node_list = None, [node("a", ready="Unknown")]
    clock.now += 5
    assert nodes.lost(reads.snapshot(), ["a"])


def test_a_node_found_gone_makes_the_ticks_look_for_its_pods_for_a_while_only() -> None:
    kube, clock = FakeKube(node_list=[node("a"), node("b", ready="Unknown")]), Clock()
    reads = NodeReads(kube, max_age=5.0, clock=clock)
    assert not reads.recently_lost()  # nothing read yet
    reads.snapshot()
    assert reads.recently_lost()
    clock.now += RECENT_LOSS_SECONDS - 1
    reads.snapshot()  # still gone: it counts from the first read that found it gone
    assert reads.recently_lost()
    clock.now += 1
    assert not reads.recently_lost()
    assert reads.reads == 2
    kube.node_list = [node("a", ready="Unknown"), node("b", ready="Unknown")]  # another node dies
    clock.now += 5
    reads.snapshot()
    assert reads.recently_lost()


# -- one tick ---------------------------------------------------------------------------------------------

URL = "redis://:p@h:6379/0"
LABELS = {
    "jobqueue.dev/queue": "q",
    "jobqueue.dev/jobqueue": "m",
    "app.kubernetes.io/component": "worker",
    "app.kubernetes.io/managed-by": "jobqueue-operator",
}
BODY: dict[str, Any] = {
    "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
    "spec": {
        "image": "i",
        "app": "a:app",
        "broker": {"external": {"urlSecretRef": {"name": "url", "key": "url"}}},
        "queues": [{"name": "q", "concurrency": 1, "autoscaling": {"enabled": False}, "replicas": 2}],
    },
}


@pytest.fixture
def tick_world(monkeypatch: pytest.MonkeyPatch) -> tuple[FakeKube, list[str], list[broker.Incarnation]]:
    """A JobQueue with two worker Pods on nodes `a` and `b`, a broker whose registry is the returned list,
    and the instances the tick restored."""
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(URL.encode()).decode()}
    kube.objects[("Deployment", "m-q-worker")] = {
        "metadata": {"name": "m-q-worker", "labels": LABELS, "resourceVersion": "1"},
        "spec": {"replicas": 2},
        "status": {"replicas": 2, "readyReplicas": 2},
    }
    for name, on in (("m-q-worker-1", "a"), ("m-q-worker-2", "b")):
        kube.pods_by_selector.append({**pod(name, on=on), "metadata": {**pod(name)["metadata"], "labels": LABELS}})
    restored: list[str] = []
    registry: list[broker.Incarnation] = []

    def restore(url: str, instance: str, **_: Any) -> Restore:
        restored.append(instance)
        return Restore(RestoreOutcome.RESTORED, {"q": 2})

    monkeypatch.setattr(broker, "read_counts", lambda url, keys, **_: {k.name: broker.QueueCounts(0, 2) for k in keys})
    monkeypatch.setattr(broker, "list_incarnations", lambda url, **_: list(registry))
    monkeypatch.setattr(broker, "unserved_queues", lambda url, queues, **_: broker.UnservedQueues({}, True))
    monkeypatch.setattr(broker, "memory_usage", lambda url, **_: (1, 0))
    monkeypatch.setattr(broker, "restore_incarnation", restore)
    return kube, restored, registry


def incarnation(pod_name: str, alive: bool) -> broker.Incarnation:
    registration = contract.Registration(f"i-{pod_name}", "q", pod_name, f"uid-{pod_name}", "ns", NOW - 100)
    return broker.Incarnation(registration, alive, 2)


def test_a_tick_restores_a_lost_nodes_worker_deletes_its_pod_and_says_which_node(
    tick_world: tuple[FakeKube, list[str], list[broker.Incarnation]],
) -> None:
    kube, restored, registry = tick_world
    registry += [incarnation("m-q-worker-1", alive=False), incarnation("m-q-worker-2", alive=True)]
    kube.node_list = [node("a"), node("b")]
    kube.lease_list = [lease("a", NOW - 30), lease("b", NOW - 3)]
    reads, metrics = NodeReads(kube, max_age=5.0, clock=lambda: NOW), OperatorMetrics()
    scaling.tick(kube, BODY, scaling.Memory(), metrics, reads)
    assert restored == ["i-m-q-worker-1"]
    assert "delete Pod m-q-worker-1" in kube.calls
    assert "delete Pod m-q-worker-2" not in kube.calls
    (lost,) = [message for _, reason, message in kube.events if reason == Reason.WORKER_LOST]
    assert "m-q-worker-1" in lost
    assert "node_lost: node a's kubelet has not renewed its Lease for 30s" in lost
    assert "2 tasks it held put back" in lost
    (deleted,) = [message for _, reason, message in kube.events if reason == Reason.DELETED]
    assert deleted.startswith("Deleted Pod m-q-worker-1: its node is gone (node a's")
    assert 'reason="node_lost"' in metrics_text(metrics)


def test_a_tick_without_a_lapsed_heartbeat_reads_no_pods_and_no_nodes(
    tick_world: tuple[FakeKube, list[str], list[broker.Incarnation]],
) -> None:
    kube, restored, registry = tick_world
    registry += [incarnation("m-q-worker-1", alive=True), incarnation("m-q-worker-2", alive=True)]
    kube.node_list, kube.lease_list = [node("a")], [lease("a", NOW - 30)]
    memory = scaling.Memory(ticks=1)  # not a tick that learns start-ups
    scaling.tick(kube, BODY, memory, OperatorMetrics(), NodeReads(kube, max_age=5.0, clock=lambda: NOW))
    assert ("pods" in kube.calls, "nodes" in kube.calls, restored) == (False, False, [])


def test_a_pod_bound_to_a_node_found_gone_is_deleted_though_no_heartbeat_lapsed(
    tick_world: tuple[FakeKube, list[str], list[broker.Incarnation]],
) -> None:
    """A replacement the scheduler bound to the node before it was known gone never registers: the ticks
    look for such Pods for a while after another tick (of any JobQueue) found the node gone."""
    kube, restored, registry = tick_world
    registry += [incarnation("m-q-worker-2", alive=True)]  # m-q-worker-1, on node a, never started
    kube.node_list = [node("a", ready="Unknown"), node("b")]
    reads = NodeReads(kube, max_age=5.0, clock=lambda: NOW)
    reads.snapshot()  # another JobQueue's tick found node a gone
    scaling.tick(kube, BODY, scaling.Memory(ticks=1), OperatorMetrics(), reads)
    assert restored == []
    assert [call for call in kube.calls if call.startswith("delete Pod")] == ["delete Pod m-q-worker-1"]


def test_a_tick_that_cannot_read_the_nodes_goes_on_and_restores_nothing(
    tick_world: tuple[FakeKube, list[str], list[broker.Incarnation]],
) -> None:
    kube, restored, registry = tick_world
    registry += [incarnation("m-q-worker-1", alive=False)]
    kube.nodes_refused = "nodes is forbidden"
    scaling.tick(kube, BODY, scaling.Memory(), OperatorMetrics(), NodeReads(kube, max_age=5.0, clock=lambda: NOW))
    assert restored == []
    assert not any(call.startswith("delete Pod") for call in kube.calls)
    assert kube.status  # the tick wrote its status as usual


def metrics_text(metrics: OperatorMetrics) -> str:
    return generate_latest(metrics.registry).decode()


# -- the managed broker -----------------------------------------------------------------------------------


def managed_jobqueue(persistence: bool) -> JobQueue:
    body = {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "broker": {"managed": {"persistence": {"enabled": persistence}}},
            "queues": [{"name": "q"}],
        },
    }
    return JobQueue.from_body(body)


@pytest.mark.parametrize("persistence", [True, False])
def test_a_broker_on_a_gone_node_says_so_and_names_the_step(persistence: bool) -> None:
    jq = managed_jobqueue(persistence)
    redis_pod = {"metadata": {"name": "m-redis-0"}, "spec": {"nodeName": "a"}}
    unreachable = ManagedBroker(error="Timeout connecting to server")
    ready = BrokerState(True, Reason.REDIS_READY, "StatefulSet m-redis is ready")
    state = decide_broker.broker_state(jq, unreachable, ready, redis_pod, "node a is Ready Unknown")
    assert (state.ready, state.reason) == (False, Reason.BROKER_NODE_LOST)
    assert "Redis Pod m-redis-0 is on node a, which is gone (node a is Ready Unknown)" in state.message
    assert "kubectl taint nodes a node.kubernetes.io/out-of-service=nodeshutdown:NoExecute" in state.message
    assert "kubectl delete pod m-redis-0 -n ns --force --grace-period=0" in state.message
    assert ("append-only file" in state.message) == persistence
    assert ("are lost" in state.message) == (not persistence)
    # The node is back (nothing says it is gone): the usual verdict.
    assert decide_broker.broker_state(jq, unreachable, ready, redis_pod, None).reason == Reason.BROKER_UNREACHABLE


def test_the_node_is_only_read_for_a_broker_that_cannot_be_read() -> None:
    jq = managed_jobqueue(False)
    kube = FakeKube(node_list=[node("a", ready="Unknown")])
    redis_pod = {"metadata": {"name": "m-redis-0"}, "spec": {"nodeName": "a"}}
    reads = NodeReads(kube, max_age=5.0, clock=lambda: NOW)
    answering = ManagedBroker(state=ManagedState(as_operator=True, accepted=frozenset(), held=None, aof=False))
    assert observe._broker_node_lost(answering, [redis_pod], jq, reads) is None
    assert "nodes" not in kube.calls
    silent = ManagedBroker(error="Timeout")
    why = observe._broker_node_lost(silent, [redis_pod], jq, reads)
    assert why == "node a is Ready Unknown (Kubelet stopped posting node status)"
    assert observe._broker_node_lost(silent, [], jq, reads) is None  # no Pod: no node to ask about
    with pytest.raises(KubeError):
        FakeKube(nodes_refused="x").nodes()
