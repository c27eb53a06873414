"""PURE: how long this queue's worker Pods take to start, learned from the Pods the operator created.

A Pod's start-up is the time from its `metadata.creationTimestamp` to its `Ready` condition turning True
(`lastTransitionTime`): scheduling, image pull, container start, the worker's boot and its readiness
probe. That is an upper bound on when it takes its first task (the probe may lag the first task by a
probe period), so plans made with it err on the safe side. A Pod that restarted a container is left out:
its Ready time is that of the restart, not of the start-up.

The autoscaler uses the learned value in two places (autoscaling.py): a pod asked for now serves only
after a start-up, and an idle pod is worth keeping for about one start-up (ski rental). Keep a `Learned`
per queue, feed it the queue's Pods on each tick (`learn`), and pass `estimate(...)` as
`Policy.startup_seconds` (autoscaling.DEFAULT_STARTUP_SECONDS until it answers).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from jobqueue_operator.apitime import epoch_of

KEEP: Final = 20
"""Start-ups remembered per queue: the most recent ones, so a change (a new image, a busier cluster) shows."""
QUANTILE: Final = 0.75
"""The estimate is this quantile of the remembered start-ups: most new pods start at least this fast."""
MAX_SECONDS: Final = 3600.0
"""A longer one is not a start-up (a Pod that waited for a node for an hour, a clock jump): left out."""


@dataclass(frozen=True, slots=True)
class PodStart:
    uid: str
    seconds: float


@dataclass(frozen=True, slots=True)
class Learned:
    """The most recent start-ups, oldest first; start with `Learned()`, keep what `learn` returns."""

    starts: tuple[PodStart, ...] = ()


def pod_start(pod: Mapping[str, Any]) -> PodStart | None:
    """The start-up of one Pod (an API object as a dict), or None while it is not Ready or cannot tell."""
    metadata = pod.get("metadata") or {}
    status = pod.get("status") or {}
    uid, created = metadata.get("uid"), epoch_of(metadata.get("creationTimestamp"))
    ready = next(
        (c for c in status.get("conditions") or [] if c.get("type") == "Ready" and c.get("status") == "True"), None
    )
    if not uid or created is None or ready is None:
        return None
    if any(int(c.get("restartCount") or 0) > 0 for c in status.get("containerStatuses") or []):
        return None
    became_ready = epoch_of(ready.get("lastTransitionTime"))
    if became_ready is None:
        return None
    seconds = became_ready - created
    return PodStart(str(uid), seconds) if 0.0 <= seconds <= MAX_SECONDS else None


def learn(learned: Learned, starts: Iterable[PodStart | None]) -> Learned:
    """`learned` with the start-ups not seen before appended (each Pod counted once), the last KEEP kept."""
    known = {s.uid for s in learned.starts}
    new = []
    for start in starts:
        if start is not None and start.uid not in known:
            known.add(start.uid)
            new.append(start)
    return Learned((*learned.starts, *new)[-KEEP:])


def estimate(learned: Learned) -> float | None:
    """The QUANTILE of the remembered start-ups (nearest rank), or None before the first one."""
    if not learned.starts:
        return None
    values = sorted(s.seconds for s in learned.starts)
    return values[min(len(values) - 1, max(0, math.ceil(QUANTILE * len(values)) - 1))]
