"""PURE: what the reconciler read of a managed broker (broker_admin reads it; broker_restart and
broker_password decide on it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Held:
    """The tasks a Redis restart without persistence would lose, now."""

    waiting: int
    """Messages in every task queue's lists (the spec's, removed and unserved ones)."""
    in_flight: int
    """Delivered to a worker, not yet acknowledged (kombu's unacked hash)."""
    dead_letters: int
    complete: bool = True
    """False: the key search stopped at its budget, so there may be more."""

    @property
    def total(self) -> int:
        return self.waiting + self.in_flight + self.dead_letters


@dataclass(frozen=True)
class ManagedState:
    """One read of a managed broker by the reconciler."""

    as_operator: bool
    """Logged in as the operator's own user (False: with the Secret's URL; the user is missing)."""
    accepted: frozenset[str]
    """SHA-256 (hex) of every password the default user accepts (`ACL GETUSER default`); a highly available
    broker: those every member and Sentinel that was read accepts (ACL is per instance, not replicated)."""
    held: Held | None
    """None: not counted (Redis runs its current template: no restart to decide)."""
    aof: bool
    """Redis runs with the append-only file (`INFO persistence`): a restart keeps its data."""
    accepted_somewhere: frozenset[str] | None = None
    """A highly available broker: what at least one member or Sentinel read accepts; None: one Redis
    (`accepted` says it all)."""
    unread: tuple[str, ...] = ()
    """A highly available broker's members and Sentinels whose passwords could not be read, and why."""
