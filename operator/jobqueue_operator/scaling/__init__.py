"""One autoscaler tick of one JobQueue: read, decide, act.

    seen = observe.read(client, jq, ...)     # the broker, the worker Deployments and Pods, their nodes,
                                             #   the PromQL sources
    plan = decide.plan(seen, memory, body)   # PURE: replicas per queue (autoscaling.decide), metric
                                             #   series, the status the autoscaler owns, Warnings
    converge.carry_out(client, plan, ...)    # scale (idle Pods first), metrics, status, Events

The controller (controller.py) runs it every few seconds per JobQueue, in a thread pool of its own, so a
slow broker or a slow metric source holds up only its own JobQueue.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from pydantic import ValidationError

from jobqueue_operator import kube
from jobqueue_operator.events import Event
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.models import JobQueue
from jobqueue_operator.node_reads import NodeReads
from jobqueue_operator.scaling import converge, decide, observe
from jobqueue_operator.scaling.converge import Memory

__all__ = ["Memory", "tick"]

LEARN_EVERY_TICKS: Final = 6
"""Every this many ticks (and on the first), the worker Pods are read to learn how long they take to start."""


def tick(
    client: kube.KubeApi,
    body: Mapping[str, Any],
    memory: Memory,
    metrics: OperatorMetrics,
    node_reads: NodeReads | None = None,
) -> list[Event]:
    """One autoscaler pass over every queue of the JobQueue `body`; the Events it posted. `node_reads`: the
    nodes, shared by every JobQueue (None: no node is ever known to be gone)."""
    try:
        jq = JobQueue.from_body(dict(body))
    except ValidationError:
        return []  # the reconciler reports the invalid spec
    draining = [str(item.get("name")) for item in (body.get("status") or {}).get("drainingQueues") or []]
    memory.ticks += 1
    learn = memory.ticks % LEARN_EVERY_TICKS == 1
    seen = observe.read(client, jq, memory.url, draining, with_pods=learn, node_reads=node_reads)
    plan = decide.plan(seen, memory.queues, body, memory.master)
    return converge.carry_out(client, plan, dict(body), memory, metrics, seen.at)
