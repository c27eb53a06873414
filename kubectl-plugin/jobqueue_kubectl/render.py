"""PURE: the plugin's text, from JobQueue bodies and Events as the API server returns them."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

Body = Mapping[str, Any]
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


def status(body: Body, events: Sequence[Body], now: float) -> str:
    meta, spec, current = body["metadata"], body.get("spec") or {}, body.get("status") or {}
    ready = _condition(body, "Ready")
    lines = [
        f"JobQueue {meta['namespace']}/{meta['name']}: Ready={ready.get('status', 'Unknown')}"
        + (
            f" ({ready['reason']}: {ready.get('message', '')})"
            if ready.get("status") != "True" and ready.get("reason")
            else ""
        ),
        f"broker: {'external' if (spec.get('broker') or {}).get('external') else 'managed Redis'}, "
        f"backlog {_count(current.get('backlog'))}, workers {current.get('workers') or '?'}",
        "",
    ]
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


def top(bodies: Sequence[Body], now: float) -> str:
    if not bodies:
        return "No JobQueues found."
    rows = [["NAMESPACE", "NAME", "READY", "QUEUES", "WAITING", "IN FLIGHT", "OLDEST", "WORKERS", "AGE"]]
    for body in sorted(bodies, key=lambda b: (b["metadata"]["namespace"], b["metadata"]["name"])):
        meta, current = body["metadata"], body.get("status") or {}
        queues = current.get("queues") or []
        waiting = [q.get("ready") for q in queues]
        flying = [q.get("inFlight") for q in queues]
        oldest = max((q.get("oldestTaskAgeSeconds") or 0 for q in queues if q.get("ready")), default=None)
        created = _seconds(meta.get("creationTimestamp"))
        rows.append([
            meta["namespace"], meta["name"], _condition(body, "Ready").get("status", "Unknown"),
            str(len((body.get("spec") or {}).get("queues") or [])),
            "?" if None in waiting else str(sum(w or 0 for w in waiting)),
            "?" if None in flying else str(sum(f or 0 for f in flying)),
            age(oldest) if oldest else "-",
            f"{sum(q.get('readyReplicas', 0) for q in queues)}/{sum(q.get('desiredReplicas', 0) for q in queues)}",
            age(now - created) if created else "?",
        ])  # fmt: skip
    return table(rows)
