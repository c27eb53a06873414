"""Reconcile one JobQueue: read the world, decide what it should be, make it so.

    world = observe.read(client, body)        # every read (API server, external broker)
    plan = decide.plan(world, ...)            # PURE: children, replicas, prune, status, Events
    outcome = converge.carry_out(client, plan)  # every write, in a safe order

The controller (controller.py) runs it when the JobQueue or one of its children changes, on retry while
it does not converge, and on a periodic resync.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from jobqueue_operator import kube
from jobqueue_operator.node_reads import NodeReads
from jobqueue_operator.reconcile import converge, decide, observe
from jobqueue_operator.reconcile.converge import Memory, Outcome, retry_after

__all__ = ["Memory", "Outcome", "reconcile", "retry_after"]


def reconcile(
    client: kube.KubeApi,
    body: Mapping[str, Any],
    memory: Memory,
    now: str,
    wanted: Callable[[], bool] = lambda: True,
    node_reads: NodeReads | None = None,
) -> Outcome:
    """Converge the children of the JobQueue `body` and write its status; `now` is wall-clock (RFC 3339);
    `wanted`: whether the JobQueue is still to be reconciled (not marked for deletion since `body` was read);
    `node_reads`: the nodes, shared by every JobQueue (None: no node is ever known to be gone)."""
    world = observe.read(client, body, node_reads)
    plan = decide.plan(world, memory.conditions, now)
    return converge.carry_out(client, plan, memory, now, wanted)
