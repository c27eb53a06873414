"""PURE: which dead worker incarnations' tasks to put back on their queues, and why.

Every worker process registers itself in the broker (pod, pod uid, start time) and keeps a heartbeat key
alive while it runs; the messages it holds are recorded beside it (docs/worker-contract.md). The operator
restores an incarnation's messages only when BOTH say it is gone for good:
- its heartbeat has expired (it is not writing to the broker any more), and
- the API server shows its process cannot be running: its Pod is gone (deleted, or replaced by another Pod
  of the same name: a different uid), or its container ended or started again since the incarnation
  registered (a restart in place is a new incarnation).
A worker whose heartbeat lapsed while its container still runs (a stalled or partitioned process) may
still finish and acknowledge its tasks: it is left to kombu's visibility timeout, never restored here.
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Why = Literal["pod_deleted", "container_restarted"]
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
) -> list[Dead]:
    """The incarnations of this JobQueue's workers (namespace, and a Pod of one of its worker `deployments`)
    whose tasks can be put back now. `pods`: the JobQueue's worker Pods by name, as the API server has them."""
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
    return found
