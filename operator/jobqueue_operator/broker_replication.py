"""PURE: a Sentinel-managed broker's members as the operator sees them, what that means for the tasks
(the BrokerAvailable condition, the replica states and the replication lag of the metrics), and whether the
master changed since the last look (the BrokerFailover Event).

The Sentinels are asked for the master of the broker's master name (`SENTINEL MASTER`) and its replicas
(`SENTINEL REPLICAS`); the one that knows the latest configuration (the highest `config-epoch`) is
believed. The master they name is then asked itself (`INFO replication`): it is the only one that knows
which replicas are in sync now, and whether it refuses writes because too few are (`min-replicas-to-write`
within `min-replicas-max-lag` seconds). `broker_sentinel.read` does the asking; everything here only
reads what it returns (redis-py's parsed answers), so it is tested without Redis.

Failover itself is Sentinel's (docs/broker.md): the operator only reports it.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final, Literal

from jobqueue_operator.events import Event
from jobqueue_operator.reasons import Reason

if TYPE_CHECKING:  # only the type
    from jobqueue_operator.status import Verdict

ReplicaState = Literal["in_sync", "lagging", "syncing", "down"]
REPLICA_STATES: Final[tuple[ReplicaState, ...]] = ("in_sync", "lagging", "syncing", "down")
"""Every state of `jobqueue_broker_replicas{state}`: in_sync (the master streams to it within
min-replicas-max-lag), lagging (connected, but its last acknowledgement is older than that), syncing (taking
a full copy of the data), down (the Sentinels know it, the master does not stream to it)."""
MEMBERS_IN_SYNC_WANTED: Final = 2
"""Members (the master and its in-sync replicas) that hold every acknowledged write: below two, losing the
master loses writes, and the condition says so."""
AVAILABILITY_REASONS: Final[tuple[Reason, ...]] = (
    Reason.BROKER_REPLICATED,
    Reason.BROKER_WRITES_REFUSED,
    Reason.BROKER_UNDER_REPLICATED,
    Reason.BROKER_QUORUM_LOST,
    Reason.BROKER_NO_MASTER,
    Reason.BROKER_UNREACHABLE,
)
"""Every reason `assess` gives the BrokerAvailable condition: the `reason` values of
`jobqueue_broker_availability`, so an alert rule can tell a refused write from a lost quorum (the status
condition metric carries no reason)."""
DEFAULT_MAX_LAG_SECONDS: Final = 10
"""Redis's own default of `min-replicas-max-lag`, used when the master does not say its setting."""
_DOWN_FLAGS: Final = frozenset({"s_down", "o_down", "disconnected"})


@dataclass(frozen=True)
class Replica:
    """One replica as the Sentinels and the master see it."""

    address: str
    """host:port, as the Sentinels and the master's INFO name it."""
    state: str | None = None
    """The master's word for it (`INFO replication`: online, wait_bgsave, send_bulk); None: not listed."""
    lag_seconds: int | None = None
    """Seconds since its last acknowledgement to the master (what min-replicas-max-lag compares)."""
    offset: int | None = None
    """The replication offset it acknowledged (bytes)."""


@dataclass(frozen=True)
class Members:
    """One look at a Sentinel-managed broker, at wall-clock time `at`."""

    at: float
    master_name: str
    sentinels: int
    """Sentinels the broker URL lists."""
    answering: int = 0
    """Of them, those that answered about `master_name`."""
    error: str | None = None
    """Why no Sentinel answered (then nothing else is known)."""
    master: str | None = None
    """host:port of the master the Sentinels name (None: none knows `master_name`)."""
    epoch: int | None = None
    """The Sentinels' config-epoch: it grows by one with each failover."""
    last_answer: float | None = None
    """When the named master last answered a Sentinel's PING (wall-clock seconds: `at` minus the Sentinel's
    `last-ok-ping-reply`); while it is down, when it stopped answering."""
    since: float | None = None
    """When the Sentinel last saw the named master's role change (`at` minus `role-reported-time`): right
    after a failover, when it was promoted."""
    master_problem: str | None = None
    """Why the named master cannot be used now: the Sentinels see it down, it does not answer, or it answers
    as a replica (a failover under way)."""
    quorum_problem: str | None = None
    """`SENTINEL CKQUORUM`'s refusal: the Sentinels that answer cannot agree on, or authorize, a failover."""
    replicas: tuple[Replica, ...] = ()
    master_offset: int | None = None
    good_replicas: int | None = None
    """The master's count of replicas within min-replicas-max-lag (`min_slaves_good_slaves`; None: not set)."""
    min_replicas_to_write: int | None = None
    """The master's `min-replicas-to-write` (None: it did not say, e.g. CONFIG refused to this user)."""
    max_lag_seconds: int | None = None
    """The master's `min-replicas-max-lag` (None: it did not say)."""


def address(state: Mapping[str, Any]) -> str:
    return f"{state.get('ip')}:{state.get('port')}"


def _flags(state: Mapping[str, Any]) -> set[str]:
    """A Sentinel state's flags: a comma-separated string in RESP2, a set in RESP3."""
    flags = state.get("flags") or ""
    return set(flags) if isinstance(flags, set | frozenset) else set(str(flags).split(","))


def newest(answers: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """Of the Sentinels' `SENTINEL MASTER` answers, the one with the latest configuration (config-epoch)."""
    return max(answers, key=lambda state: int(state.get("config-epoch") or 0), default=None)


def master_down(state: Mapping[str, Any]) -> str | None:
    """Why the Sentinels do not route to the master they name (None: they do)."""
    down = sorted(_flags(state) & _DOWN_FLAGS)
    return f"the Sentinels flag it {', '.join(down)}" if down else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def replicas(sentinel_replicas: Sequence[Mapping[str, Any]], info: Mapping[str, Any] | None) -> tuple[Replica, ...]:
    """Every replica the Sentinels (`SENTINEL REPLICAS`) or the master (`INFO replication`, its `slaveN`
    entries) know, by address, with what the master says of it (a replica it does not list is down, whatever
    the Sentinels think; one that stopped answering stays listed until `repl-timeout`, its lag growing)."""
    streamed = {
        address(entry): entry
        for key, entry in (info or {}).items()
        if key.startswith("slave") and isinstance(entry, Mapping)
    }
    found = []
    for where in sorted({address(state) for state in sentinel_replicas} | set(streamed)):
        entry = streamed.get(where)
        if entry is None:
            found.append(Replica(where))
        else:
            found.append(Replica(where, str(entry.get("state")), _int(entry.get("lag")), _int(entry.get("offset"))))
    return tuple(found)


def replica_state(replica: Replica, max_lag_seconds: int) -> ReplicaState:
    if replica.state is None:
        return "down"
    if replica.state != "online":
        return "syncing"
    if replica.lag_seconds is not None and replica.lag_seconds > max_lag_seconds:
        return "lagging"
    return "in_sync"


@dataclass(frozen=True)
class Assessment:
    """What one look means: the condition, and the metric series."""

    verdict: Verdict
    replicas: Mapping[str, int] = field(default_factory=dict)
    """Replicas per state; empty when the master could not be read (nothing is known of them)."""
    lag_seconds: int | None = None
    """The largest lag of the replicas the master streams to (None: it streams to none, or was not read)."""
    lag_bytes: int | None = None
    """The largest distance, in bytes, between the master's offset and one of those replicas'."""


def _summary(members: Members, states: Mapping[str, ReplicaState]) -> str:
    parts = []
    for replica in members.replicas:
        state = states[replica.address]
        detail = state.replace("_", " ")
        if replica.lag_seconds is not None and state != "down":
            behind = (
                f", {members.master_offset - replica.offset} bytes behind"
                if members.master_offset is not None and replica.offset is not None
                else ""
            )
            detail += f" (lag {replica.lag_seconds} s{behind})"
        parts.append(f"{replica.address} {detail}")
    listed = "; ".join(parts) if parts else "none"
    return f"replicas: {listed}; {members.answering} of {members.sentinels} Sentinels answer"


def assess(members: Members) -> Assessment:
    """The BrokerAvailable condition and the metric series of one look."""
    if members.error is not None:
        message = f"no Sentinel answers about the master {members.master_name!r}: {members.error}"
        return Assessment(("False", Reason.BROKER_UNREACHABLE, message))
    if members.master is None:
        message = (
            f"no Sentinel knows a master named {members.master_name!r} ({members.answering} of "
            f"{members.sentinels} answer): check the master name the Sentinels monitor"
        )
        return Assessment(("False", Reason.BROKER_NO_MASTER, message))
    if members.master_problem is not None:
        message = (
            f"the Sentinels name {members.master} master of {members.master_name!r}, but {members.master_problem}: "
            "producers and workers cannot write until Sentinel promotes a replica (a failover takes "
            "down-after-milliseconds plus a few seconds)"
        )
        return Assessment(("False", Reason.BROKER_NO_MASTER, message))
    max_lag = members.max_lag_seconds if members.max_lag_seconds is not None else DEFAULT_MAX_LAG_SECONDS
    states = {replica.address: replica_state(replica, max_lag) for replica in members.replicas}
    counts: dict[str, int] = {state: sum(1 for found in states.values() if found == state) for state in REPLICA_STATES}
    streamed = [r for r in members.replicas if r.state is not None]
    lags = [r.lag_seconds for r in streamed if r.lag_seconds is not None]
    behind = [
        members.master_offset - r.offset for r in streamed if r.offset is not None and members.master_offset is not None
    ]
    lag_seconds = max(lags) if lags else None
    lag_bytes = max(0, max(behind)) if behind else None
    in_sync = 1 + counts["in_sync"]
    members_text = f"{in_sync} of {1 + len(members.replicas)} members in sync"
    where = f"master {members.master}, {members_text}; {_summary(members, states)}"
    verdict: Verdict
    required = members.min_replicas_to_write or 1
    if members.good_replicas is not None and members.good_replicas < required:
        verdict = (
            "False",
            Reason.BROKER_WRITES_REFUSED,
            f"the master refuses writes (NOREPLICAS): {members.good_replicas} replicas acknowledged within "
            f"min-replicas-max-lag {max_lag} s, min-replicas-to-write {required}; it would rather refuse a "
            f"task than accept one a failover could lose; {where}",
        )
    elif in_sync < MEMBERS_IN_SYNC_WANTED:
        verdict = (
            "False",
            Reason.BROKER_UNDER_REPLICATED,
            f"fewer than {MEMBERS_IN_SYNC_WANTED} members in sync: losing the master now loses the writes only it "
            f"holds; {where}",
        )
    elif members.quorum_problem is not None:
        verdict = (
            "False",
            Reason.BROKER_QUORUM_LOST,
            f"the Sentinels could not fail over now ({members.quorum_problem}); {where}",
        )
    else:
        verdict = ("True", Reason.BROKER_REPLICATED, where)
    return Assessment(verdict, counts, lag_seconds, lag_bytes)


@dataclass(frozen=True)
class MasterSeen:
    """The master as last seen working (what the tick remembers between looks)."""

    address: str
    at: float
    """The last look (wall-clock seconds) at which it answered as the master."""
    last_answer: float | None = None
    """The latest time the Sentinels say it answered them (looks while it is down say when it stopped)."""


def working_master(members: Members) -> str | None:
    """The master of this look, if it answered as one (None: none, or it cannot be used now)."""
    if members.error is not None or members.master_problem is not None:
        return None
    return members.master


def _stamp(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%H:%M:%SZ")


@dataclass(frozen=True)
class Failover:
    """A change of master between two looks."""

    old: str
    new: str
    old_last_answer: float
    """When `old` last answered: as the Sentinels said during the failover, else the operator's last look at it
    as the master (then later than the truth, up to a tick)."""
    promoted: float
    """When `new` became the master, as the Sentinels say (else the operator's first look at it)."""

    @property
    def seconds(self) -> float:
        """How long no master answered: from the old one's last answer to the new one's promotion."""
        return max(0.0, self.promoted - self.old_last_answer)

    def event(self, master_name: str) -> Event:
        message = (
            f"the broker's master {master_name!r} moved from {self.old} to {self.new} (a Sentinel failover): no "
            f"master for {self.seconds:.1f} s, from the old master's last answer ({_stamp(self.old_last_answer)}) "
            f"to the new one's promotion ({_stamp(self.promoted)}); tasks the old master acknowledged but had not "
            "replicated are lost, tasks in flight may run again (docs/broker.md)"
        )
        return Event("Warning", Reason.BROKER_FAILOVER, message)


def follow(previous: MasterSeen | None, members: Members) -> tuple[MasterSeen | None, Failover | None]:
    """The master to remember after this look, and the failover it shows (None: none). A look without a
    working master only records when the remembered one last answered; the first look is a baseline (a
    restarted operator has not seen the master before it)."""
    current = working_master(members)
    if current is None:
        if previous is not None and members.master == previous.address and members.last_answer is not None:
            return replace(previous, last_answer=max(previous.last_answer or 0.0, members.last_answer)), None
        return previous, None
    seen = MasterSeen(current, members.at, members.last_answer)
    if previous is None or previous.address == current:
        return seen, None
    last = previous.last_answer if previous.last_answer is not None else previous.at
    promoted = members.since if members.since is not None and members.since >= last else members.at
    return seen, Failover(previous.address, current, last, promoted)
