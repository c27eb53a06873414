"""Per-policy numbers from a simulation, the printed table, the JSON and the plot."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.autoscale.sim import Result

COLUMNS = (
    ("policy", "{:<17}"),
    ("p50_wait_s", "{:>8.1f}"),
    ("p95_wait_s", "{:>8.1f}"),
    ("p99_wait_s", "{:>8.1f}"),
    ("within_slo", "{:>8.2%}"),
    ("worker_s", "{:>9.0f}"),
    ("scale_events", "{:>6}"),
    ("interrupted", "{:>6}"),
    ("lost", "{:>5}"),
)
HEADERS = ("policy", "p50 wait", "p95 wait", "p99 wait", "<= SLO", "worker-s", "scales", "interr", "lost")


def summarize(name: str, result: Result, slo_wait_s: float) -> dict[str, Any]:
    """The numbers the issue asks for, per policy."""
    done = [t for t in result.tasks if t.done is not None and t.start is not None]
    waits = sorted(t.start - t.arrival for t in done if t.start is not None)
    slot_seconds = result.worker_seconds()
    return {
        "policy": name,
        "tasks": len(result.tasks),
        "mean_wait_s": round(sum(waits) / len(waits), 2) if waits else 0.0,
        "p50_wait_s": _quantile(waits, 0.50),
        "p95_wait_s": _quantile(waits, 0.95),
        "p99_wait_s": _quantile(waits, 0.99),
        "max_wait_s": waits[-1] if waits else 0.0,
        "within_slo": sum(1 for w in waits if w <= slo_wait_s) / max(len(result.tasks), 1),
        "worker_s": round(slot_seconds, 1),
        "pods_started": len(result.pods),
        "scale_events": result.scale_events,
        "interrupted": result.interrupted,
        "redelivered": result.interrupted,
        "lost": len(result.tasks) - len(done),
        "max_backlog": max((s[1] for s in result.samples), default=0),
        "horizon_s": round(result.horizon, 1),
    }


def table(rows: Sequence[dict[str, Any]]) -> str:
    widths = [len(fmt.format(rows[0][col])) for col, fmt in COLUMNS] if rows else [len(h) for h in HEADERS]
    header = "  ".join(h.rjust(w) if i else h.ljust(w) for i, (h, w) in enumerate(zip(HEADERS, widths, strict=True)))
    lines = [header]
    lines += ["  ".join(fmt.format(row[col]) for col, fmt in COLUMNS) for row in rows]
    return "\n".join(lines)


def plot(path: Path, title: str, series: dict[str, Result]) -> None:
    """Backlog (waiting tasks) and pods over time, one panel per policy, shared time axis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(series), 1, figsize=(9, 1.7 * len(series) + 0.6), sharex=True, squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], series.items(), strict=True):
        times = [s[0] / 60 for s in result.samples]
        ax.fill_between(times, [s[1] for s in result.samples], step="post", color="tab:orange", alpha=0.5, lw=0)
        ax.set_ylabel("waiting", color="tab:orange", fontsize=8)
        ax.tick_params(labelsize=7)
        pods = ax.twinx()
        pods.step(times, [s[3] for s in result.samples], where="post", color="tab:blue", lw=1)
        pods.set_ylabel("pods", color="tab:blue", fontsize=8)
        pods.tick_params(labelsize=7)
        pods.set_ylim(bottom=0)
        ax.set_title(name, fontsize=9, loc="left")
    axes[-1, 0].set_xlabel("minutes", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def _quantile(values: Sequence[float], q: float) -> float:
    """Nearest-rank quantile of sorted values."""
    if not values:
        return 0.0
    return round(values[min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))], 2)
