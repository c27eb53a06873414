"""PURE: a broker's memory: its maxmemory, when it counts as full, and the reserve the operator opens on a
managed broker that is full, so its workers can drain it.

Redis over its maxmemory (noeviction) refuses every write and every transaction, the workers' as well as
the producers': a worker can neither record a task it takes (kombu's unacked hash) nor even start (kombu's
restore lock is a SET), so a full broker would never drain by itself. Redis cannot tell a worker from a
producer, so the reserve is open to both: while a managed broker is full the operator raises its
maxmemory (CONFIG SET, no restart, nothing lost) from the normal share of the memory limit to the
reserve share, and lowers it back once the workers have drained the broker below `DRAINED_SHARE` of
the normal maxmemory. A maxmemory that is neither of the two (set by hand, or a Redis still running
with an earlier limit) is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

MAXMEMORY_SHARE: Final = Decimal("0.8")
"""Of the container's memory limit, what Redis may hold in data normally: the rest is its own overhead and
the copy-on-write pages of a background save or AOF rewrite. Full, it refuses writes (noeviction)
instead of evicting a queue or the unacked hash, and the status says so."""
RESERVE_SHARE: Final = Decimal("0.85")
"""Of the container's memory limit, the maxmemory while the reserve is open: room for the workers to take
and finish tasks, still below the limit (Redis's overhead lives above maxmemory)."""
FULL_SHARE: Final = 0.95
"""Of a maxmemory, the share at which the broker is reported full (a few tasks more and it refuses)."""
DRAINED_SHARE: Final = 0.7
"""Of the normal maxmemory, the use below which the reserve closes again (well below full: no flapping)."""


def mib(count: float) -> str:
    """Bytes as the status and the Events show them."""
    return f"{count / 2**20:.1f} MiB"


@dataclass(frozen=True)
class Bounds:
    """A managed broker's two maxmemory values, in bytes."""

    normal: int
    reserve: int


def bounds(memory_limit_bytes: Decimal | None) -> Bounds | None:
    """The maxmemory values for a container memory limit; None without a limit (then Redis has none)."""
    if memory_limit_bytes is None:
        return None
    return Bounds(int(memory_limit_bytes * MAXMEMORY_SHARE), int(memory_limit_bytes * RESERVE_SHARE))


@dataclass(frozen=True)
class Verdict:
    """What the broker's memory is now, and what the operator does about it."""

    full: bool
    """Used at or above `FULL_SHARE` of the maxmemory that applies (the normal one for a managed broker)."""
    reserve_open: bool
    """A managed broker whose maxmemory is (or is set now to) the reserve."""
    set_maxmemory: int | None = None
    """The maxmemory to set now (the reserve opens or closes); None: leave it."""


def assess(used: int, maxmemory: int, managed: Bounds | None) -> Verdict | None:
    """`used` and `maxmemory` as INFO memory gives them; `managed`: the bounds of a managed broker (None for
    an external one, or one without a memory limit). None when the broker has no maxmemory at all."""
    if maxmemory <= 0:
        return None
    if managed is None or maxmemory not in (managed.normal, managed.reserve):
        return Verdict(full=used >= maxmemory * FULL_SHARE, reserve_open=False)
    full = used >= managed.normal * FULL_SHARE
    was_open = maxmemory == managed.reserve
    open_now = full or (was_open and used > managed.normal * DRAINED_SHARE)
    wanted = managed.reserve if open_now else managed.normal
    return Verdict(full=full, reserve_open=open_now, set_maxmemory=None if wanted == maxmemory else wanted)
