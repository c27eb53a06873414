"""PURE: the Events the operator posts on a JobQueue, and which existing Event a repeat raises.

A problem that lasts is seen by every reconcile, and a crash-looping worker's cause comes and goes with each
restart. Kubernetes' answer (client-go's EventCorrelator) is one Event whose count goes up: so a Warning
has a cause (`Event.cause`: the queue it is about, or the broker; by default its whole message), and a
Warning seen again while its Event was last raised less than `REPEAT_SECONDS` ago raises that Event's
count, lastTimestamp and message instead of posting a new one: `kubectl describe jq` shows
`WorkersFailing ... (x20 over 8m)`, once. A cause gone for longer gets a new Event when it comes back.
The Events on the API server are the record (the cause is kept in an annotation), so a restarted
operator, or the reconcile and the autoscaler tick posting the same cause, still raise one Event.
Normal Events (a child created, a queue scaled) describe one change each and are always posted anew.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final, Literal

REPEAT_SECONDS: Final = 600.0
"""A Warning seen again within this time of its Event's lastTimestamp raises that Event's count."""
CAUSE_ANNOTATION: Final = "jobqueue.dev/event-cause"
"""The annotation on a Warning Event that keeps its cause, so a repeat finds it."""


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str
    cause: str = ""
    """What the Warning is about (a queue's name, "broker"): one Event per (reason, cause), its message the
    latest. Empty: the message itself (a Warning whose message names everything it is about)."""

    @property
    def key(self) -> str:
        return self.cause or self.message


@dataclass(frozen=True)
class Posted:
    """A Warning Event on the API server, as far as choosing the one to raise needs it."""

    name: str
    cause: str | None
    count: int
    last: float
    """Its lastTimestamp, in seconds since the epoch."""


def distinct(events: Sequence[Event]) -> list[Event]:
    """Each Event to post once, in order: a Warning once per (reason, cause), with its last message."""
    out: dict[tuple[str, str, str], Event] = {}
    for event in events:
        out[(event.type, event.reason, event.key if event.type == "Warning" else event.message)] = event
    return list(out.values())


def to_raise(event: Event, posted: Sequence[Posted], now: float) -> Posted | None:
    """The Event (of the same object and reason) that `event` repeats, so its count goes up; None: post a new
    one. The newest of the same cause, if it was raised less than `REPEAT_SECONDS` ago."""
    if event.type != "Warning":
        return None
    same = [p for p in posted if p.cause == event.key and now - p.last < REPEAT_SECONDS]
    return max(same, key=lambda p: p.last, default=None)
