"""PURE: how long the oldest waiting task of a queue has waited, with or without the producer's help.

kombu LPUSHes a queue's messages and its workers pop the other end, so the last element (LINDEX -1) of each
priority list is that list's oldest message. Its age comes from one of three sources, said with the number:
- `sent-time`: the producer stamped the send time (`jobqueue_sent_at`, `jobqueue_worker.sent_time`): exact,
  as far as the producer's and the operator's clocks agree;
- `first-seen`: an unchanged producer's message carries no time, so the operator remembers when it first
  saw each message at the end of a list (by its kombu delivery tag, or task id) and counts from then. A
  lower bound: exact to a tick for a message that waited at the end (no worker takes tasks, or they are
  all busy with long ones, or it is a low priority one), short for one that reached the end after waiting
  behind others (a backlog being drained), and counted from the operator's start after a restart;
- `arrivals`: the other lower bound, from counting what entered the queue (`rates.oldest_wait_at_least`):
  exact to a tick while a first-in-first-out backlog drains, but blind to priorities and to anything older
  than the rate window (5 minutes) or the operator's start.
Unstamped, the larger of the two lower bounds is the age (`first-seen` on a tie).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, TypeAlias, get_args

from jobqueue_operator.models import OldestAgeSource

Source: TypeAlias = OldestAgeSource
SOURCES: Final[tuple[Source, ...]] = get_args(Source)


@dataclass(frozen=True, slots=True)
class Tail:
    """The oldest message of one priority list."""

    id: str
    """kombu's delivery tag (kept across redeliveries), else the task id; "" when neither can be read."""
    sent_at: float | None = None
    """The producer's send time (epoch seconds), when stamped."""


def remember(first_seen: Mapping[str, float], tails: Sequence[Tail], now: float) -> dict[str, float]:
    """When each current tail was first seen (`now` for a new one); tails gone are forgotten."""
    return {tail.id: first_seen.get(tail.id, now) for tail in tails if tail.id}


def oldest(tails: Sequence[Tail], first_seen: Mapping[str, float], now: float) -> tuple[float, Source] | None:
    """The age of the oldest of `tails` and where it came from; None when no tail can be dated. A stamped
    tail is dated by its stamp, any other by `first_seen` (as `remember` returned it this tick)."""
    found: list[tuple[float, Source]] = []
    for tail in tails:
        if tail.sent_at is not None:
            found.append((max(now - tail.sent_at, 0.0), "sent-time"))
        elif tail.id in first_seen:
            found.append((max(now - first_seen[tail.id], 0.0), "first-seen"))
    return max(found, key=lambda item: item[0]) if found else None


def measured(dated: tuple[float, Source] | None, arrivals: float | None) -> tuple[float, Source] | None:
    """The queue's oldest waiting task's age and its source: the stamp's when the oldest end is stamped
    (`dated` from `oldest`), else the larger of the two lower bounds, first sight and the arrivals count."""
    if dated is not None and dated[1] == "sent-time":
        return dated
    if arrivals is not None and (dated is None or arrivals > dated[0]):
        return arrivals, "arrivals"
    return dated
