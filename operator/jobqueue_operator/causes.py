"""PURE: why Pods do not run, read from the objects the API server returns, in words a user can act on.

Each function takes one object (a Pod, a Deployment, Events of a StatefulSet) as the API server returns it
(camelCase) and returns a `Cause`, or None when nothing is wrong with it. A cause carries the API server's
or the container's own message: the admission plugin that refused a Pod, the quota it exceeded, the image
that could not be pulled, the last line a crashing container wrote (its termination message; the operator
sets `terminationMessagePolicy: FallbackToLogsOnError`, so that is the tail of its log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

Kind = Literal["refused", "failing", "pulling"]
"""refused: the Pods cannot be created; failing: they run and crash, or cannot start; pulling: the image."""

WAITING_FAILURES: Final[dict[str, Kind]] = {
    "CrashLoopBackOff": "failing",
    "CreateContainerConfigError": "failing",
    "CreateContainerError": "failing",
    "RunContainerError": "failing",
    "ErrImagePull": "pulling",
    "ImagePullBackOff": "pulling",
    "ErrImageNeverPull": "pulling",
    "InvalidImageName": "pulling",
}
MESSAGE_LIMIT: Final = 400


@dataclass(frozen=True)
class Cause:
    kind: Kind
    message: str


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1][:MESSAGE_LIMIT] if lines else ""


def _terminated(status: Mapping[str, Any]) -> str:
    """How a container's last run ended: exit code, reason and its last line, e.g.
    `exit code 2 (Error): ModuleNotFoundError: No module named 'media'`."""
    ended = (status.get("lastState") or {}).get("terminated") or (status.get("state") or {}).get("terminated")
    if not ended:
        return ""
    text = f"exit code {ended.get('exitCode')} ({ended.get('reason') or 'Error'})"
    line = _last_line(ended.get("message"))
    return f"{text}: {line}" if line else text


def pod(pod: Mapping[str, Any]) -> Cause | None:
    """What keeps one Pod's containers from running, if anything."""
    name = (pod.get("metadata") or {}).get("name", "?")
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    for status in statuses:
        waiting = (status.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason") or ""
        kind = WAITING_FAILURES.get(reason)
        if kind is None:
            continue
        detail = _terminated(status) if reason == "CrashLoopBackOff" else ""
        detail = detail or _last_line(waiting.get("message"))
        container = status.get("name", "?")
        text = f"Pod {name} container {container}: {reason}" + (f": {detail}" if detail else "")
        return Cause(kind, text)
    return None


def deployment(deployment: Mapping[str, Any]) -> Cause | None:
    """The Deployment's ReplicaFailure condition: its ReplicaSet could not create Pods (admission, quota)."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "ReplicaFailure" and condition.get("status") == "True":
            return Cause("refused", _last_line(condition.get("message")) or "its Pods cannot be created")
    return None


def failed_create(events: Sequence[Mapping[str, Any]]) -> Cause | None:
    """The newest FailedCreate Event of a StatefulSet (it has no condition for it), if any."""
    if not events:
        return None
    return Cause("refused", _last_line(events[-1].get("message")) or "its Pods cannot be created")


def first(causes: Iterable[Cause | None]) -> Cause | None:
    """The most telling of several causes: a refusal before a failure before an image problem."""
    found = [c for c in causes if c is not None]
    order: dict[Kind, int] = {"refused": 0, "failing": 1, "pulling": 2}
    return min(found, key=lambda c: order[c.kind]) if found else None
