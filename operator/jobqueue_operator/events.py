"""PURE: the Events the operator posts on a JobQueue, and which of them to post now.

A problem that lasts is seen by every reconcile; its Warning is posted when it first appears and then at
most once per `REPEAT_SECONDS`, so `kubectl describe jq` shows it without a flood. Normal Events (a
child created, a queue scaled) describe one change each and are always posted.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

REPEAT_SECONDS: Final = 600.0


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


Posted = Mapping[tuple[str, str], float]
"""(reason, message) of a Warning -> when it was last posted (monotonic seconds)."""


def to_post(events: Sequence[Event], posted: Posted, now: float) -> tuple[list[Event], dict[tuple[str, str], float]]:
    """The Events to post now, and the updated record of Warnings posted (Warnings not seen again are
    forgotten, so a problem that comes back is posted again at once)."""
    out: list[Event] = []
    record: dict[tuple[str, str], float] = {}
    for event in dict.fromkeys(events):  # each distinct Event once, in order
        if event.type == "Normal":
            out.append(event)
            continue
        key = (event.reason, event.message)
        last = posted.get(key)
        if last is None or now - last >= REPEAT_SECONDS:
            out.append(event)
            record[key] = now
        else:
            record[key] = last
    return out, record
