"""PURE: whether a node is gone, and why, from what the API server says of it.

A node that loses power says nothing: its Pods stay `Running` in the API server for minutes (the node
controller waits its grace period, then 300 s of default tolerations, then a confirmation that never
comes). What the API server does show, in order of how early it shows it:
- its kubelet stops renewing the node's Lease (`kube-node-lease/<node>`, every 10 s by default): a Lease
  not renewed for longer than `lease_grace` (default 20 s: two renewals missed; never longer than the
  Lease's own `leaseDurationSeconds`) says the kubelet is gone;
- after the node monitor's grace period (40-50 s) the node controller sets its `Ready` condition to
  `Unknown` and adds the `node.kubernetes.io/unreachable` taint;
- a node deleted (a cloud machine taken back) has no Node object at all.
Any of them is the API server's word that the node is gone. `NotReady` (`Ready` False) is not: the kubelet
still runs and reports it.

The Lease's renewTime is written by the kubelet's clock and compared with the operator's: the nodes' and
the operator's clocks must agree within a few seconds (NTP), as they must for the node controller too.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue_operator.apitime import epoch_of

UNREACHABLE_TAINT: Final = "node.kubernetes.io/unreachable"
OUT_OF_SERVICE_TAINT: Final = "node.kubernetes.io/out-of-service"
"""The taint a person puts on a node known to be off, so its Pods (and volumes) are released at once."""
LEASE_NAMESPACE: Final = "kube-node-lease"
LEAVING_TAINTS: Final = frozenset({"node.kubernetes.io/unschedulable", "ToBeDeletedByClusterAutoscaler"})
"""Taints of a node on its way out: cordoned (`kubectl cordon`/`drain`), or picked by the cluster
autoscaler for removal (it taints rather than cordons)."""
DEFAULT_LEASE_GRACE_SECONDS: Final = 20.0
"""A kubelet renews its Lease every 10 s (a quarter of its 40 s duration): 20 s is two renewals missed."""

Manifest = Mapping[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """The Nodes and their kubelet Leases as read at wall-clock time `at` (seconds since the epoch)."""

    nodes: Mapping[str, Manifest] = field(default_factory=dict)
    """Node name -> Node."""
    leases: Mapping[str, Manifest] = field(default_factory=dict)
    """Node name -> its Lease in kube-node-lease."""
    at: float = 0.0
    lease_grace: float = DEFAULT_LEASE_GRACE_SECONDS


def _grace(lease: Manifest, lease_grace: float) -> float:
    duration = (lease.get("spec") or {}).get("leaseDurationSeconds")
    return min(lease_grace, float(duration)) if isinstance(duration, int | float) and duration > 0 else lease_grace


def lease_stale_at(lease: Manifest, lease_grace: float) -> float | None:
    """When the Lease counts as not renewed (its renewTime plus the grace); None: it has no renewTime."""
    renewed = epoch_of((lease.get("spec") or {}).get("renewTime"))
    return None if renewed is None else renewed + _grace(lease, lease_grace)


def _ready(node: Manifest) -> Mapping[str, Any] | None:
    conditions = (node.get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == "Ready"), None)


def gone(snapshot: Snapshot, node: str) -> str | None:
    """Why the node named `node` is gone, as the snapshot shows it; None: nothing says it is."""
    found = snapshot.nodes.get(node)
    if found is None:
        return f"Node {node} does not exist"
    ready = _ready(found)
    if ready is not None and ready.get("status") == "Unknown":
        said = str(ready.get("message") or ready.get("reason") or "").rstrip(".")
        return f"node {node} is Ready Unknown" + (f" ({said})" if said else "")
    taints = ((found.get("spec") or {}).get("taints")) or []
    if any(taint.get("key") == UNREACHABLE_TAINT for taint in taints):
        return f"node {node} has the {UNREACHABLE_TAINT} taint"
    lease = snapshot.leases.get(node)
    stale = None if lease is None else lease_stale_at(lease, snapshot.lease_grace)
    if lease is not None and stale is not None and snapshot.at > stale:
        renewed = stale - _grace(lease, snapshot.lease_grace)
        return (
            f"node {node}'s kubelet has not renewed its Lease for {snapshot.at - renewed:.0f}s "
            f"(more than {_grace(lease, snapshot.lease_grace):g}s)"
        )
    return None


def lost(snapshot: Snapshot | None, names: Iterable[str]) -> dict[str, str]:
    """Of the nodes `names`, those gone -> why (none without a snapshot: nothing is known to be gone)."""
    if snapshot is None:
        return {}
    found = {name: gone(snapshot, name) for name in set(names) if name}
    return {name: why for name, why in found.items() if why is not None}


def next_stale(snapshot: Snapshot) -> float | None:
    """The first moment after the read at which one of its Leases, unless renewed meanwhile, turns stale:
    a read older than that may hide a node that is gone by now (so it is read again then)."""
    moments = [
        stale
        for lease in snapshot.leases.values()
        if (stale := lease_stale_at(lease, snapshot.lease_grace)) is not None and stale >= snapshot.at
    ]
    return min(moments, default=None)


def leaving(snapshot: Snapshot, node: str) -> bool:
    """Whether the node is being emptied: cordoned, or tainted for removal by the cluster autoscaler."""
    found = snapshot.nodes.get(node)
    if found is None:
        return False
    spec = found.get("spec") or {}
    return bool(spec.get("unschedulable")) or any(t.get("key") in LEAVING_TAINTS for t in spec.get("taints") or [])


def node_of(pod: Manifest) -> str:
    """The node a Pod is bound to ("" while it is not scheduled)."""
    return str((pod.get("spec") or {}).get("nodeName") or "")
