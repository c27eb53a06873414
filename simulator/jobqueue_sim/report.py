"""Per-policy numbers from a simulation and the printed table."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from jobqueue_sim.model import Result

COLUMNS = (
    ("policy", "{:<17}"),
    ("p50_wait_s", "{:>8.1f}"),
    ("p95_wait_s", "{:>8.1f}"),
    ("p99_wait_s", "{:>8.1f}"),
    ("within_slo", "{:>8.2%}"),
    ("worker_s", "{:>9.0f}"),
    ("cost_ratio", "{:>6.2f}"),
    ("scale_events", "{:>6}"),
    ("interrupted", "{:>6}"),
    ("lost", "{:>5}"),
)
HEADERS = ("policy", "p50 wait", "p95 wait", "p99 wait", "<= SLO", "worker-s", "ratio", "scales", "interr", "lost")


def summarize(name: str, result: Result, slo_wait_s: float, pod_bound: float | None = None) -> dict[str, Any]:
    """The numbers of one policy on one trace; `cost_ratio` is worker-seconds / `pod_bound` (None without it)."""
    done = [t for t in result.tasks if t.done is not None and t.start is not None]
    waits = sorted(t.start - t.arrival for t in done if t.start is not None)
    slot_seconds = result.worker_seconds()
    return {
        "policy": name,
        "tasks": len(result.tasks),
        "mean_wait_s": round(sum(waits) / len(waits), 2) if waits else 0.0,
        "p50_wait_s": quantile(waits, 0.50),
        "p95_wait_s": quantile(waits, 0.95),
        "p99_wait_s": quantile(waits, 0.99),
        "max_wait_s": waits[-1] if waits else 0.0,
        "within_slo": sum(1 for w in waits if w <= slo_wait_s) / max(len(result.tasks), 1),
        "worker_s": round(slot_seconds, 1),
        "pod_bound_worker_s": None if pod_bound is None else round(pod_bound, 1),
        "cost_ratio": round(slot_seconds / pod_bound, 3) if pod_bound else None,
        "pods_started": len(result.pods),
        "scale_events": result.scale_events,
        "interrupted": result.interrupted,
        "below_in_flight": result.below_in_flight,
        "redelivered": result.interrupted,
        "lost": len(result.tasks) - len(done),
        "max_backlog": max((s[1] for s in result.samples), default=0),
        "horizon_s": round(result.horizon, 1),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    widths = [len(_cell(fmt, rows[0][col])) for col, fmt in COLUMNS] if rows else [len(h) for h in HEADERS]
    header = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(HEADERS, widths, strict=True)))
    lines = [header]
    lines += ["  ".join(_cell(fmt, row[col]) for col, fmt in COLUMNS) for row in rows]
    return "\n".join(lines)


def _cell(fmt: str, value: Any) -> str:
    return fmt.format(value) if value is not None else fmt.format(float("nan")).replace("nan", "-")


def quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 2)
