"""PURE: which dead worker incarnations' tasks to put back on their queues, and why.

Every worker process registers itself in the broker (pod, pod uid, start time) and keeps a heartbeat key
alive while it runs; the messages it holds are recorded beside it (docs/worker-contract.md). The operator
restores an incarnation's messages only when BOTH say it is gone for good:
- its heartbeat has expired (it is not writing to the broker any more), and
- the API server shows its process cannot be running: its Pod is gone (deleted, or replaced by another Pod
  of the same name: a different uid), or its container ended or started again since the incarnation
  registered (a restart in place is a new incarnation).
- or the API server says the node the Pod is bound to is gone (`nodes.gone`: its kubelet's Lease not
  renewed, Ready Unknown, the unreachable taint, no Node): a power cut leaves the Pod `Running` in the API
  server for minutes, but nothing of it runs (reason `node_lost`).
A worker whose heartbeat lapsed while its container still runs on a node the API server still hears from
(a stalled process, or one cut off from Redis only) may still finish and acknowledge its tasks: it is left
to kombu's visibility timeout, never restored here.

The worker Pods on a gone node are deleted (`on_lost_nodes`) once nothing of them beats in the broker: on
an unreachable node a Pod counts as active for minutes, so its ReplicaSet would not replace it; once it is
marked for deletion the ReplicaSet starts a replacement at once.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from jobqueue_operator import nodes

Why = Literal["pod_deleted", "container_restarted", "node_lost"]
WHYS: Final[tuple[Why, ...]] = ("pod_deleted", "container_restarted", "node_lost")
"""Every reason, as `jobqueue_tasks_redelivered_total{reason}` has them (docs/metrics.md)."""
WORKER_CONTAINER: Final = "worker"


@dataclass(frozen=True)
class Seen:
    """One registered incarnation as the broker has it (the fields the decision needs)."""

    instance: str
    queue: str
    pod: str
    pod_uid: str
    namespace: str
    started_at: float
    alive: bool
    held: int = 0
    result_backend_problem: str = ""
    """What the incarnation reports about its result backend ("": nothing wrong, or not checked yet)."""


@dataclass(frozen=True)
class Dead:
    incarnation: Seen
    why: Why
    node: str = ""
    """`node_lost`: the node the Pod is bound to, and why it is gone (the WorkerLost Event says both)."""
    detail: str = ""


@dataclass(frozen=True)
class LostPod:
    """A worker Pod bound to a gone node, to delete so that its ReplicaSet replaces it elsewhere."""

    name: str
    node: str
    detail: str
    """Why the node is gone (`nodes.gone`)."""


def _epoch(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        parsed = datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC)
    except ValueError:
        return None
    return parsed.timestamp()


def _container(pod: Mapping[str, Any]) -> Mapping[str, Any] | None:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return next((s for s in statuses if s.get("name") == WORKER_CONTAINER), statuses[0] if statuses else None)


def _ended_since(status: Mapping[str, Any] | None, started_at: float) -> bool:
    """Whether the container's process that registered at `started_at` cannot be running any more."""
    if status is None:
        return False  # no container status yet: the Pod is starting, nothing of ours ran in it
    state = status.get("state") or {}
    if "running" not in state:
        return True  # terminated, or waiting to start again: no worker process runs
    running_since = _epoch((state.get("running") or {}).get("startedAt"))
    if running_since is not None and running_since > started_at:
        return True  # the container started again after this incarnation registered
    last_end = _epoch(((status.get("lastState") or {}).get("terminated") or {}).get("finishedAt"))
    # Times have whole seconds: an incarnation registered in the second its container last ended, or
    # before, belonged to that ended run.
    return last_end is not None and last_end >= math.floor(started_at)


def dead(
    incarnations: Sequence[Seen],
    pods: Mapping[str, Mapping[str, Any]],
    namespace: str,
    deployments: Collection[str],
    lost: Mapping[str, str] | None = None,
) -> list[Dead]:
    """The incarnations of this JobQueue's workers (namespace, and a Pod of one of its worker `deployments`)
    whose tasks can be put back now. `pods`: the JobQueue's worker Pods by name, as the API server has them;
    `lost`: the nodes known to be gone -> why (`nodes.lost`)."""
    lost = lost or {}
    found = []
    for seen in incarnations:
        ours = seen.namespace == namespace and any(seen.pod.startswith(f"{d}-") for d in deployments)
        if not ours or seen.alive or not seen.pod_uid:
            continue
        pod = pods.get(seen.pod)
        metadata = (pod or {}).get("metadata") or {}
        if pod is None or metadata.get("uid") != seen.pod_uid:
            found.append(Dead(seen, "pod_deleted"))
        elif _ended_since(_container(pod), seen.started_at):
            found.append(Dead(seen, "pod_deleted" if metadata.get("deletionTimestamp") else "container_restarted"))
        elif (node := nodes.node_of(pod)) in lost:
            found.append(Dead(seen, "node_lost", node, lost[node]))
    return found


def on_lost_nodes(
    pods: Mapping[str, Mapping[str, Any]], incarnations: Sequence[Seen], lost: Mapping[str, str]
) -> list[LostPod]:
    """The worker Pods (`pods`, by name) bound to a node in `lost` that are not marked for deletion yet and
    have no incarnation whose heartbeat is alive (a worker that still beats may still run: it reaches Redis,
    whatever its kubelet does). `incarnations` must be the broker's whole registry of these Pods' queues."""
    beating = {seen.pod_uid for seen in incarnations if seen.alive and seen.pod_uid}
    found = []
    for name, pod in sorted(pods.items()):
        metadata = pod.get("metadata") or {}
        node = nodes.node_of(pod)
        if node in lost and not metadata.get("deletionTimestamp") and metadata.get("uid") not in beating:
            found.append(LostPod(name, node, lost[node]))
    return found
