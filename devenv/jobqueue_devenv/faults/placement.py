"""PURE: the node faults' choices, from what the API server and the broker say: which node to kill or drain,
which operator replica leads, and how many workers a PodDisruptionBudget lets go at once. Unit tested.

A node scenario never faults the *spare* node (the ledger's Redis and the scenario's own broker live there,
so a fault measures one thing), and kills the operator's leader's node only when it means to
(`operator-node-killed`): elsewhere it prefers a node the leader is not on, if the cluster has one.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any

Manifest = Mapping[str, Any]


def node_of(pod: Manifest) -> str:
    """The node a Pod is bound to ("" while it is not scheduled)."""
    return str((pod.get("spec") or {}).get("nodeName") or "")


def by_node(pods: Iterable[Manifest]) -> dict[str, set[str]]:
    """Node -> the names of the Pods bound to it (unscheduled Pods left out)."""
    found: dict[str, set[str]] = {}
    for pod in pods:
        if node := node_of(pod):
            found.setdefault(node, set()).add(str(pod["metadata"]["name"]))
    return found


def victim(
    pods_by_node: Mapping[str, Collection[str]],
    busy: Collection[str],
    *,
    spare: Collection[str],
    avoid: Collection[str] = (),
    least: int = 1,
    whole: bool = False,
) -> str | None:
    """The node to fault: one with at least `least` of the `busy` Pods (with `whole`, only busy Pods), never
    one of `spare`, one not in `avoid` when there is such a node; of those, the one with the most busy Pods
    (then by name). None: no node qualifies (yet)."""
    busy_here = {node: len(set(pods) & set(busy)) for node, pods in pods_by_node.items() if node not in spare}
    fit = sorted(
        (
            node
            for node, count in busy_here.items()
            if count >= least and (not whole or count == len(pods_by_node[node]))
        ),
        key=lambda n: (-busy_here[n], n),
    )
    preferred = [node for node in fit if node not in avoid]
    return next(iter(preferred or fit), None)


def leader(leases: Iterable[Manifest], pods: Collection[str]) -> str | None:
    """The Pod (of `pods`, the operator's) that holds one of `leases` (Lease objects), if any does.
    The operator's holder identity is its Pod's name (`jobqueue_operator.election.identity`)."""
    for lease in leases:
        holder = (lease.get("spec") or {}).get("holderIdentity") or ""
        if holder in pods:
            return str(holder)
    return None


def _scaled(value: int | str, total: int) -> int:
    """An int-or-percent of a PodDisruptionBudget, rounded up as the disruption controller does."""
    if isinstance(value, str) and value.endswith("%"):
        return math.ceil(total * int(value[:-1]) / 100)
    return int(value)


def disruptions_allowed(budget: Manifest, replicas: int) -> int:
    """How many of `replicas` Pods the PodDisruptionBudget (`spec`) lets be down at once: `maxUnavailable`,
    or `replicas` minus `minAvailable` (percentages rounded up, as Kubernetes rounds them); never below 0."""
    if budget.get("maxUnavailable") is not None:
        return max(0, min(replicas, _scaled(budget["maxUnavailable"], replicas)))
    if budget.get("minAvailable") is not None:
        return max(0, replicas - _scaled(budget["minAvailable"], replicas))
    return replicas
