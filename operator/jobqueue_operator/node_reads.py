"""The Nodes and their kubelet Leases, read for every JobQueue at once: at most once per autoscaler tick
interval, and only when a tick or a reconcile asks (a worker or the managed Redis is on a node and its
heartbeat or answer is missing). One operator may run a thousand JobQueues: they share each read.

A read is reused until it is `max_age` old, or until the moment one of its Leases would turn stale if not
renewed meanwhile (`nodes.next_stale`): then a node that died just after the read is seen at the next
tick, not one interval later. A failed read (RBAC, a slow API server) is "no node known gone", logged once
per spell, and retried after `max_age`: the tick goes on without it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Final, Protocol

from jobqueue_operator import kube, nodes
from jobqueue_operator.build.common import Manifest

logger = logging.getLogger(__name__)

RECENT_LOSS_SECONDS: Final = 120.0
"""How long after a node is first seen gone the ticks look for Pods of theirs on it, even with no lapsed
heartbeat: until the node controller taints it (40-50 s after its death), the scheduler may still bind new
Pods (a replacement) to it. Later, the ticks that read the Pods anyway (lapsed heartbeats, every sixth)
find the rest, so a node gone for days does not make every JobQueue read its Pods on every tick."""


class NodeSource(Protocol):
    def nodes(self) -> list[Manifest]: ...
    def node_leases(self) -> list[Manifest]: ...


class NodeReads:
    """The shared, cached view of the nodes (thread safe: the ticks and reconciles of every JobQueue ask)."""

    def __init__(
        self,
        source: NodeSource,
        max_age: float,
        lease_grace: float = nodes.DEFAULT_LEASE_GRACE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._source, self._max_age, self._lease_grace, self._clock = source, max_age, lease_grace, clock
        self._lock = threading.Lock()
        self._snapshot: nodes.Snapshot | None = None
        self._refresh_at = float("-inf")
        self._failing = False
        self._gone_since: dict[str, float] = {}
        """Node -> when a read first found it gone (while every read since did)."""
        self.reads = 0
        """Reads sent so far (the tests count them)."""

    def recently_lost(self) -> bool:
        """Whether a read found a node gone within the last `RECENT_LOSS_SECONDS` (no request): a tick then
        reads its worker Pods to find those bound to it."""
        with self._lock:
            now = self._clock()
            return any(now - since < RECENT_LOSS_SECONDS for since in self._gone_since.values())

    def snapshot(self) -> nodes.Snapshot | None:
        """A read no older than `max_age` (reading now if needed); None when the nodes cannot be read."""
        with self._lock:
            now = self._clock()
            if now < self._refresh_at:
                return self._snapshot
            self._read(now)
            return self._snapshot

    def _read(self, now: float) -> None:
        self.reads += 1
        self._refresh_at = now + self._max_age
        try:
            found = self._source.nodes()
            leases = self._source.node_leases()
        except kube.KubeError as exc:
            if not self._failing:
                logger.warning("cannot read the nodes (a lost node's workers wait for their Pods' end): %s", exc)
            self._failing, self._snapshot = True, None
            return
        if self._failing:
            logger.info("the nodes can be read again")
        self._failing = False
        snapshot = nodes.Snapshot(
            nodes={str(node["metadata"]["name"]): node for node in found},
            leases={str(lease["metadata"]["name"]): lease for lease in leases},
            at=now,
            lease_grace=self._lease_grace,
        )
        self._snapshot = snapshot
        gone = nodes.lost(snapshot, snapshot.nodes)
        self._gone_since = {name: self._gone_since.get(name, now) for name in gone}
        stale = nodes.next_stale(snapshot)
        if stale is not None:
            self._refresh_at = min(self._refresh_at, stale)
