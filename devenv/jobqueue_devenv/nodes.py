"""Power the nodes of a running local cluster off and on, as a cloud takes a spot machine back and returns it.

`kill` is a power cut: the node's cgroup (its agent and every process of its Pods: containers, host
processes, runc, probes) is frozen, its Pods' cables are pulled (their veths deleted: packets to them are
lost, not refused), and everything in it is SIGKILLed at once (cgroup v2 `cgroup.kill`). Nothing tells the
API server: the Node stays Ready until the node lifecycle controller sees its Lease expire (40 s), and its
Pods stay Running in the API. `start` boots the node again, empty (no Pod process, network namespace or
Pod folder of before); its agent confirms the deletion of its Pods that were deleted meanwhile and starts
the others afresh, as a kubelet after a reboot. `python -m jobqueue_devenv node kill|start|list`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import signal
from pathlib import Path
from typing import Final

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from jobqueue_devenv import cluster, processes
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.nodeagent import cleanup, layout, network, runc
from jobqueue_devenv.waiting import TimedOut, wait_until

START_TIMEOUT: Final = 90.0
LEASE_NAMESPACE: Final = "kube-node-lease"


def _state(cluster_directory: Path) -> cluster.ClusterState:
    state = cluster.ClusterState.load(cluster_directory)
    if state is None:
        raise DevenvError(f"no local cluster in {cluster_directory}", "start one with `make cluster-up NODES=3`")
    return state


def _node(state: cluster.ClusterState, node: str) -> layout.NodeLayout:
    place = (
        layout.NodeLayout.load(layout.agent_folder(Path(state.directory), node)) if node in state.node_names else None
    )
    if place is None:
        raise DevenvError(f"the local cluster has no node {node!r}", f"its nodes are {', '.join(state.node_names)}")
    return place


def names(cluster_directory: Path) -> list[str]:
    """The cluster's nodes, first node first."""
    return list(_state(cluster_directory).node_names)


def agent_running(cluster_directory: Path, node: str) -> bool:
    state = _state(cluster_directory)
    _node(state, node)
    record = state.agent(node)
    return record is not None and processes.is_running(record)


def kill(cluster_directory: Path, node: str) -> None:
    """Cut the power of `node`: every process of it dies at once and its Pods' addresses go silent.
    Returns once no process of the node is left."""
    state = _state(cluster_directory)
    place = _node(state, node)
    folder = layout.agent_folder(cluster_directory, node)
    runc.freeze_node_cgroup(place.cgroup_parent)
    network.unplug(network.Block(place.block), place.hosts)
    gone = runc.kill_node_cgroup(place.cgroup_parent)
    runc.freeze_node_cgroup(place.cgroup_parent, frozen=False)  # empty now; a thawed cgroup for the next boot
    record = state.agent(node)
    if record is not None and processes.is_running(record):  # not in its cgroup (should not happen)
        with contextlib.suppress(OSError):
            os.kill(record.pid, signal.SIGKILL)
    for pid in cleanup.pod_processes(folder):  # a process that left the cgroup (should not happen either)
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if record is not None:
        with contextlib.suppress(ChildProcessError):
            os.waitpid(record.pid, os.WNOHANG)  # our own child (the caller ran `up`): no zombie
    if not gone:
        raise DevenvError(
            f"processes of node {node} outlived SIGKILL (cgroup {place.cgroup_parent})",
            "look for processes stuck in the kernel (state D) with `ps -eo pid,stat,cmd`",
        )
    if node not in state.stopped_nodes:
        state.stopped_nodes.append(node)
    state.save()


def _lease_renewed_since(coordination: client.CoordinationV1Api, node: str, since: datetime.datetime) -> bool:
    try:
        lease = coordination.read_namespaced_lease(node, LEASE_NAMESPACE)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    renewed = lease.spec.renew_time
    return renewed is not None and renewed >= since


def _ready(core: client.CoreV1Api, node: str) -> bool:
    conditions = core.read_node(node).status.conditions or []
    return any(c.type == "Ready" and c.status == "True" for c in conditions)


def start(cluster_directory: Path, node: str, timeout: float = START_TIMEOUT) -> None:
    """Boot `node` again, empty, and return once its agent has renewed its Lease and the Node is Ready."""
    state = _state(cluster_directory)
    _node(state, node)
    record = state.agent(node)
    if record is not None and processes.is_running(record):
        raise DevenvError(
            f"node {node} is running", f"power it off first: `python -m jobqueue_devenv node kill {node}`"
        )
    folder = layout.agent_folder(cluster_directory, node)
    cleanup.reset_node(folder)
    booted = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    record = cluster.spawn_agent(state, node)
    if node in state.stopped_nodes:
        state.stopped_nodes.remove(node)
    state.save()
    api_client = config.new_client_from_config(config_file=state.kubeconfig)
    core, coordination = client.CoreV1Api(api_client), client.CoordinationV1Api(api_client)
    log = agent_log(Path(state.directory), node)

    def up_again() -> str | None:
        if not processes.is_running(record):
            return "exited"
        return "ready" if _lease_renewed_since(coordination, node, booted) and _ready(core, node) else None

    try:
        outcome = wait_until(up_again, timeout=timeout, what=f"node {node} Ready with a renewed Lease", interval=0.2)
    except TimedOut:
        outcome = f"was not Ready within {timeout:g}s"
    if outcome != "ready":
        raise DevenvError(f"the agent of node {node} {outcome}: {processes.log_tail(log)}", f"see {log}")


def agent_log(cluster_directory: Path, node: str) -> Path:
    """The log file of `node`'s agent (every boot appends to it)."""
    return Path(cluster_directory) / "logs" / f"{layout.folder_name(node)}.log"


def listing(cluster_directory: Path) -> list[tuple[str, str]]:
    """(node, "running" | "off" (killed) | "dead" (its agent ended by itself)) for every node."""
    state = _state(cluster_directory)
    rows = []
    for node in state.node_names:
        record = state.agent(node)
        if record is not None and processes.is_running(record):
            rows.append((node, "running"))
        else:
            rows.append((node, "off" if node in state.stopped_nodes else "dead"))
    return rows
