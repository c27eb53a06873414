"""Where the node scenarios run, and the node-level reads and faults they share.

A node fault needs nodes to lose, so these scenarios run on a cluster of their own with `NODES` nodes (never
the session's one-node cluster, whose other tests a power cut would hit), with the operator installed as the
chart installs it (its default replicas and leader election) and the ledger's Redis on the *spare* node: the
first node, which no scenario faults, so a power cut never erases the record of what ran. Each scenario puts
its own broker there too (every other node cordoned while the Redis Pod is placed), unless the broker is what
it faults: then it measures one thing at a time.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
import uuid
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from jobqueue_devenv import binaries, cluster, demo, nodes
from jobqueue_devenv.faults import placement
from jobqueue_devenv.faults.stage import Stage, Target, held_tasks, is_ready, ledger_broker
from jobqueue_devenv.waiting import TimedOut, wait_until
from jobqueue_operator import naming
from jobqueue_operator.nodes import OUT_OF_SERVICE_TAINT

NODES: Final = 3
"""Three nodes: the spare one, one to fault, and one more for the replacements and the operator's standby."""
OUT_OF_SERVICE: Final = f"{OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute"
"""The taint a person puts on a node known to be off (Kubernetes' non-graceful node shutdown), as the
operator's BrokerNodeLost message says."""
SETTLE_TIMEOUT: Final = 180.0
"""For the operator's replicas and a scenario's workers to be Ready again between faults."""


@contextlib.contextmanager
def node_cluster(directory: Path, reuse: cluster.ClusterState | None = None) -> Iterator[cluster.ClusterState]:
    """A cluster of at least `NODES` nodes: `reuse` if it has them, else one started in `directory` and
    stopped afterwards."""
    if reuse is not None and len(reuse.node_names) >= NODES:
        yield reuse
        return
    state, reused = cluster.up(directory, binaries.find(), nodes=NODES)
    try:
        yield state
    finally:
        if not reused:
            cluster.down(directory)


@dataclass(frozen=True)
class Rig:
    """What every node scenario runs on."""

    kube: demo.Kube
    operator: demo.RunningOperator
    ledger_url: str
    spare: str
    """The node no scenario faults: the ledger's Redis and the scenarios' own brokers live there."""


@contextlib.contextmanager
def rig(kube: demo.Kube, prefix: str, log: Path, release: str) -> Iterator[Rig]:
    """The chart installed (release `release` in its own namespace, watching `<prefix>-*`) and the ledger
    on the first node; everything removed afterwards."""
    spare = nodes.names(kube.directory)[0]
    with contextlib.ExitStack() as stack:
        running = stack.enter_context(demo.operator(kube, [f"{prefix}-*"], log, release, release))
        with only_on(kube, spare):
            ledger_url = stack.enter_context(ledger_broker(kube, prefix))
        yield Rig(kube, running, ledger_url, spare)


@contextlib.contextmanager
def bench_rig(state: cluster.ClusterState | None, name: str, log: Path) -> Iterator[tuple[Rig, str]]:
    """A benchmark's rig and namespace prefix (`<name>-<session>`, release `jq<name>-<session>`): on `state`
    if it has `NODES` nodes, else on a cluster started for it in a temporary folder and stopped afterwards."""
    session = uuid.uuid4().hex[:5]
    prefix = f"{name}-{session}"
    with (
        tempfile.TemporaryDirectory(prefix=f"jq-{name}-") as folder,
        node_cluster(Path(folder) / "cluster", reuse=state) as nodes_state,
        rig(demo.Kube.for_cluster(nodes_state), prefix, log, f"jq{name}-{session}") as here,
    ):
        yield here, prefix


# ---- nodes ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def cordoned(kube: demo.Kube, names: Collection[str]) -> Iterator[None]:
    """The nodes `names` take no new Pod for the block (cordoned, then uncordoned however it ends)."""
    done: list[str] = []
    try:
        for name in names:
            kube.kubectl("cordon", name)
            done.append(name)
        yield
    finally:
        for name in done:
            kube.kubectl("uncordon", name)


def only_on(kube: demo.Kube, node: str) -> contextlib.AbstractContextManager[None]:
    """Pods scheduled in the block go to `node`: every other node cordoned meanwhile."""
    return cordoned(kube, [name for name in nodes.names(kube.directory) if name != node])


@contextlib.contextmanager
def power_cut(kube: demo.Kube, node: str) -> Iterator[float]:
    """`node` powered off (`nodes.kill`) for the block, booted again afterwards: returns once it is Ready and
    every Pod deleted while it was off is gone from it (`deletions_done`). Yields when the power was cut
    (`time.time()` just before)."""
    at = time.time()
    nodes.kill(kube.directory, node)
    try:
        yield at
    finally:
        nodes.start(kube.directory, node)
        with contextlib.suppress(TimedOut):  # a Pod with a long grace period: the next fault counts it in
            wait_until(lambda: deletions_done(kube, node), timeout=SETTLE_TIMEOUT, what=f"deletions on {node}")


def deletions_done(kube: demo.Kube, node: str) -> bool:
    """No Pod bound to `node` is being deleted: a rebooted node has ended what was deleted while it was off."""
    pods = kube.get("pods", "-A", "--field-selector", f"spec.nodeName={node}")["items"]
    return not any(pod["metadata"].get("deletionTimestamp") for pod in pods)


def mark_out_of_service(kube: demo.Kube, node: str) -> float:
    """The documented step for a node known to be off: its Pods (and volumes) are released at once. Returns
    when it was taken."""
    at = time.time()
    kube.kubectl("taint", "nodes", node, OUT_OF_SERVICE, "--overwrite")
    return at


def clear_out_of_service(kube: demo.Kube, node: str) -> None:
    """Taken off again once the node is back (as Kubernetes' documentation says); nothing if it has none."""
    taints = kube.get("node", node)["spec"].get("taints") or []
    if any(taint.get("key") == OUT_OF_SERVICE_TAINT for taint in taints):
        kube.kubectl("taint", "nodes", node, f"{OUT_OF_SERVICE_TAINT}-")


def node_of(kube: demo.Kube, namespace: str, pod: str) -> str:
    return placement.node_of(kube.get("pod", pod, "-n", namespace))


# ---- the operator's replicas --------------------------------------------------------------------------


@dataclass(frozen=True)
class Leader:
    pod: str
    node: str


def operator_pods(kube: demo.Kube, operator: demo.RunningOperator) -> list[dict[str, Any]]:
    """The release's operator Pods that are not being deleted."""
    selector = f"{naming.INSTANCE_LABEL}={operator.release}"
    pods = kube.get("pods", "-n", operator.namespace, "-l", selector)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def leader(kube: demo.Kube, operator: demo.RunningOperator) -> Leader | None:
    """The operator Pod that holds the Lease, and its node (None: no Pod of the release holds it)."""
    pods = {pod["metadata"]["name"]: pod for pod in operator_pods(kube, operator)}
    holder = placement.leader(kube.get("leases", "-n", operator.namespace)["items"], pods.keys())
    return None if holder is None else Leader(holder, placement.node_of(pods[holder]))


def operator_settled(kube: demo.Kube, operator: demo.RunningOperator) -> Leader | None:
    """The leader, once every replica the operator's Deployment wants is Ready (a standby is there)."""
    selector = f"{naming.INSTANCE_LABEL}={operator.release}"
    deployments = kube.get("deployments", "-n", operator.namespace, "-l", selector)["items"]
    wanted = sum(int(d["spec"].get("replicas", 1)) for d in deployments)
    ready = [pod for pod in operator_pods(kube, operator) if is_ready(pod)]
    return leader(kube, operator) if deployments and len(ready) >= wanted else None


def lead_elsewhere(kube: demo.Kube, operator: demo.RunningOperator, spare: str) -> Leader:
    """The settled leader, moved off `spare` first if it runs there: its Pod deleted (a clean shutdown hands
    the Lease over) while `spare` is cordoned, so neither the new leader nor the replacement Pod lands there."""
    found = wait_until(lambda: operator_settled(kube, operator), timeout=SETTLE_TIMEOUT, what="the operator settled")
    if found.node != spare:
        return found
    with cordoned(kube, [spare]):
        kube.kubectl("delete", "pod", found.pod, "-n", operator.namespace, "--wait=false")

        def moved() -> Leader | None:
            now = operator_settled(kube, operator)
            return now if now is not None and now.node != spare else None

        return wait_until(moved, timeout=SETTLE_TIMEOUT, what="the operator leading off the spare node")


# ---- workers -----------------------------------------------------------------------------------------


def busy_node(
    here: Stage,
    target: Target,
    queue: str,
    *,
    spare: Collection[str],
    avoid: Collection[str],
    least: int,
    holding: int = 1,
    whole: bool = False,
) -> tuple[str, set[str]] | None:
    """A node (`placement.victim`) with at least `least` workers of `queue` holding `holding` tasks or more
    (their concurrency: every slot busy, so they are not fetching; with `whole`, every worker Pod of the
    queue there, those being deleted too), and its workers' names; None: none yet. Only Ready workers that
    are not being deleted count as busy."""
    pods = every_worker_pod(here, target, queue)
    held = held_tasks(target.broker)
    busy = {name for name, ids in held.items() if len(ids) >= holding} & set(
        here.ready_workers(target.deployed.name, queue)
    )
    node = placement.victim(placement.by_node(pods), busy, spare=spare, avoid=avoid, least=least, whole=whole)
    return None if node is None else (node, workers_on(here, target, queue, node))


def every_worker_pod(here: Stage, target: Target, queue: str) -> list[dict[str, Any]]:
    """Every worker Pod of `queue`, those being deleted too (their processes may still run)."""
    selector = naming.queue_selector(target.deployed.name, queue)
    return list(here.kube.get("pods", "-n", here.namespace, "-l", selector)["items"])


def workers_on(here: Stage, target: Target, queue: str, node: str) -> set[str]:
    """Every worker Pod of `queue` bound to `node`, those being deleted too."""
    return placement.by_node(every_worker_pod(here, target, queue)).get(node, set())


def held_by(target: Target, pods: Collection[str]) -> set[str]:
    """The ids of every task the broker records as held by one of `pods` (the dead workers' tasks are
    recorded until the operator restores them)."""
    held = held_tasks(target.broker)
    return {task for pod in pods for task in held.get(pod, {})}


def ready_elsewhere(here: Stage, target: Target, queue: str, node: str) -> int:
    """Ready workers of `queue` on any node but `node`."""
    pods = here.worker_pods(target.deployed.name, queue)
    return sum(1 for pod in pods if is_ready(pod) and placement.node_of(pod) != node)


def spread_again(here: Stage, target: Target, queue: str, workers: int) -> None:
    """Between faults: the workers a rebooted node lost come back there. Workers on a node holding more than
    its share are deleted (gracefully: nothing runs between faults), so the scheduler's spreading puts their
    replacements on the emptiest nodes; returns once `workers` are Ready."""
    share = -(-workers // len(nodes.names(here.kube.directory)))
    for _node, names in placement.by_node(here.worker_pods(target.deployed.name, queue)).items():
        for name in sorted(names)[share:]:
            here.kube.kubectl("delete", "pod", name, "-n", here.namespace, "--wait=false")
    wait_until(
        lambda: len(here.ready_workers(target.deployed.name, queue)) >= workers,
        timeout=SETTLE_TIMEOUT,
        what=f"{workers} ready {queue} workers",
        interval=0.5,
    )


def disruption_budget(here: Stage, target: Target, queue: str) -> dict[str, Any] | None:
    """The spec of the PodDisruptionBudget that covers the queue's workers (None: there is none)."""
    pods = here.worker_pods(target.deployed.name, queue)
    labels = (pods[0]["metadata"].get("labels") or {}) if pods else {}
    for budget in here.kube.get("poddisruptionbudgets", "-n", here.namespace)["items"]:
        wanted = (budget["spec"].get("selector") or {}).get("matchLabels") or {}
        if wanted and wanted.items() <= labels.items():
            return dict(budget["spec"])
    return None
