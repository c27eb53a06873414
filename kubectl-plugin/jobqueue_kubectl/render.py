"""PURE: the plugin's text, from JobQueue bodies and Events as the API server returns them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Final

from jobqueue_operator.reasons import Reason
from jobqueue_operator.status import OBSERVED_REFRESH_SECONDS, SCALING_ACTIVE

Body = Mapping[str, Any]
STALE_AFTER_SECONDS: Final = 3 * OBSERVED_REFRESH_SECONDS
"""A status observed longer ago than this (three of the operator's refresh periods) is called stale: a running
operator refreshes `status.lastObservedTime` at least every OBSERVED_REFRESH_SECONDS."""
SCALED = re.compile(r"^queue (?P<queue>\S+): (?P<change>\d+ -> \d+) workers \((?P<reason>\w+): (?P<message>.*)\)$")
"""The operator's ScaledUp / ScaledDown Event message (scaling.py)."""


def _seconds(stamp: str | None) -> float | None:
    if not stamp:
        return None
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def age(seconds: float | None) -> str:
    """kubectl's style: 45s, 3m20s, 2h5m, 4d."""
    if seconds is None:
        return "-"
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60}s" if seconds < 600 else f"{seconds // 60}m"
    if seconds < 86400:
        return f"{seconds // 3600}h{(seconds % 3600) // 60}m"
    return f"{seconds // 86400}d"


def table(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows)


def _condition(body: Body, kind: str) -> Mapping[str, Any]:
    for condition in (body.get("status") or {}).get("conditions") or []:
        if condition.get("type") == kind:
            return dict(condition)
    return {}


def last_decisions(events: Sequence[Body]) -> dict[str, tuple[str, str, str]]:
    """queue -> (change, reason, when) of its last scaling Event."""
    found: dict[str, tuple[str, str, str]] = {}
    for event in events:
        match = SCALED.match(event.get("message") or "")
        if match and event.get("reason") in ("ScaledUp", "ScaledDown"):
            when = event.get("lastTimestamp") or event.get("eventTime") or ""
            found[match.group("queue")] = (match.group("change"), match.group("reason"), str(when))
    return found


def _count(value: Any) -> str:
    return "?" if value is None else str(value)


def observed_age(body: Body, now: float) -> float | None:
    """Seconds since the operator last observed the JobQueue (`status.lastObservedTime`); None: never."""
    stamp = _seconds((body.get("status") or {}).get("lastObservedTime"))
    return None if stamp is None else now - stamp


def stale(body: Body, now: float, after: float = STALE_AFTER_SECONDS) -> bool:
    """Whether the status is too old to trust: observed longer than `after` ago, or never written at all by a
    JobQueue older than that (no operator ever saw it)."""
    seen = observed_age(body, now)
    if seen is not None:
        return seen > after
    created = _seconds(body["metadata"].get("creationTimestamp"))
    return not body.get("status") and created is not None and now - created > after


def _stale_warning(body: Body, now: float) -> str:
    seen = observed_age(body, now)
    when = "never observed by an operator" if seen is None else f"last observed {age(seen)} ago"
    return f"warning: status {when}: the operator may not be running, so what it shows may be that old"


def scaling(body: Body) -> str:
    """The autoscaler in one word: active, paused, the reason it holds replicas, or - (no queue autoscaled)."""
    condition = _condition(body, SCALING_ACTIVE)
    if not condition:
        return "-"
    if condition.get("status") == "True":
        return "active"
    return "paused" if condition.get("reason") == Reason.AUTOSCALING_PAUSED else str(condition.get("reason") or "?")


def _leftovers(current: Body) -> list[str]:
    """The tables of tasks outside the spec's queues: draining ones (their workers still run them) and unserved
    ones (nothing runs them)."""
    lines: list[str] = []
    draining = current.get("drainingQueues") or []
    if draining:
        lines += ["", "Draining (left the spec; their workers run until the queue is empty):"]
        rows = [["QUEUE", "TASKS", "DEPLOYMENT"]]
        rows += [[str(q.get("name")), _count(q.get("tasks")), str(q.get("deployment") or "-")] for q in draining]
        lines.append(table(rows))
    unserved = current.get("unservedQueues") or []
    if unserved:
        lines += ["", "Unserved (no queue of this JobQueue serves them: add the queue, fix the routing or purge):"]
        rows = [["QUEUE", "TASKS"]] + [[str(q.get("name")), _count(q.get("tasks"))] for q in unserved]
        lines.append(table(rows))
    return lines


def status(body: Body, events: Sequence[Body], now: float, stale_after: float = STALE_AFTER_SECONDS) -> str:
    meta, spec, current = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    ready = _condition(body, "Ready")
    draining = sum(q.get("tasks") or 0 for q in current.get("drainingQueues") or [])
    seen = observed_age(body, now)
    lines = [
        f"JobQueue {meta['namespace']}/{meta['name']}: Ready={ready.get('status', 'Unknown')}"
        + (
            f" ({ready['reason']}: {ready.get('message', '')})"
            if ready.get("status") != "True" and ready.get("reason")
            else ""
        ),
        f"broker: {'external' if (spec.get('broker') or {}).get('external') else 'managed Redis'}, "
        f"backlog {_count(current.get('backlog'))}" + (f" ({draining} draining)" if draining else "")
        + f", unserved {current.get('unservedTasks') or 0}, workers {current.get('workers') or '?'}, "
        f"observed {'never' if seen is None else age(seen) + ' ago'}",
    ]  # fmt: skip
    autoscaler = _condition(body, SCALING_ACTIVE)
    if autoscaler:
        why = f" ({autoscaler.get('reason')}: {autoscaler.get('message', '')})"
        lines.append(f"autoscaling: {scaling(body)}" + (why if autoscaler.get("status") != "True" else ""))
    if stale(body, now, stale_after):
        lines.append(_stale_warning(body, now))
    lines.append("")
    decisions = last_decisions(events)
    by_name = {q.get("name"): q for q in current.get("queues") or []}
    rows = [["QUEUE", "WAITING", "IN FLIGHT", "OLDEST", "WORKERS (READY/DESIRED)", "LAST SCALING"]]
    for queue in spec.get("queues") or []:
        seen = by_name.get(queue["name"], {})
        decision = decisions.get(queue["name"])
        if decision:
            change, reason, when = decision
            stamp = _seconds(when)
            last = f"{change} ({reason}, {age(now - stamp) if stamp else '?'} ago)"
        elif seen.get("lastScaleTime"):
            last = f"{age(now - (_seconds(seen['lastScaleTime']) or now))} ago"
        else:
            last = "-"
        rows.append([
            queue["name"],
            _count(seen.get("ready")),
            _count(seen.get("inFlight")),
            age(seen.get("oldestTaskAgeSeconds")) if seen.get("ready") else "-",
            f"{seen.get('readyReplicas', 0)}/{seen.get('desiredReplicas', 0)}",
            last,
        ])  # fmt: skip
    lines.append(table(rows))
    lines += _leftovers(current)
    if events:
        lines += ["", "Events:"]
        event_rows = [["AGE", "TYPE", "REASON", "MESSAGE"]]
        for event in events:
            stamp = _seconds(event.get("lastTimestamp") or event.get("eventTime"))
            event_rows.append([
                age(now - stamp) if stamp else "?", event.get("type", ""), event.get("reason", ""),
                (event.get("message") or "").splitlines()[0] if event.get("message") else "",
            ])  # fmt: skip
        lines.append(table(event_rows))
    return "\n".join(lines)


def top(bodies: Sequence[Body], now: float, stale_after: float = STALE_AFTER_SECONDS) -> str:
    """One row per JobQueue; WAITING and IN FLIGHT are its queues', DRAINING the tasks of queues that left the
    spec (still run by their workers), UNSERVED those nothing runs; a stale status gets a warning below."""
    if not bodies:
        return "No JobQueues found."
    rows = [["NAMESPACE", "NAME", "READY", "SCALING", "QUEUES", "WAITING", "IN FLIGHT", "DRAINING", "UNSERVED",
             "OLDEST", "WORKERS", "OBSERVED", "AGE"]]  # fmt: skip
    old: list[str] = []
    for body in sorted(bodies, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        meta, current = body["metadata"], body.get("status") or {}
        queues = current.get("queues") or []
        waiting = [q.get("ready") for q in queues]
        flying = [q.get("inFlight") for q in queues]
        draining = [q.get("tasks") for q in current.get("drainingQueues") or []]
        oldest = max((q.get("oldestTaskAgeSeconds") or 0 for q in queues if q.get("ready")), default=None)
        created = _seconds(meta.get("creationTimestamp"))
        seen = observed_age(body, now)
        if stale(body, now, stale_after):
            old.append(f"{meta['namespace']}/{meta['name']}")
        rows.append([
            meta["namespace"], meta["name"], _condition(body, "Ready").get("status", "Unknown"), scaling(body),
            str(len((body.get("spec") or {}).get("queues") or [])),
            "?" if None in waiting else str(sum(w or 0 for w in waiting)),
            "?" if None in flying else str(sum(f or 0 for f in flying)),
            "?" if None in draining else str(sum(d or 0 for d in draining)),
            str(current.get("unservedTasks") or 0),
            age(oldest) if oldest else "-",
            f"{sum(q.get('readyReplicas', 0) for q in queues)}/{sum(q.get('desiredReplicas', 0) for q in queues)}",
            age(seen) if seen is not None else "never",
            age(now - created) if created else "?",
        ])  # fmt: skip
    text = table(rows)
    if old:
        text += (
            f"\nwarning: status not observed for over {age(stale_after)}: {', '.join(old)}: "
            "the operator may not be running"
        )
    return text
