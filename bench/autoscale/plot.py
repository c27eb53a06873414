"""The benchmark's PNGs (matplotlib, Agg): per trace, waiting tasks and pods over time per policy with the
pod bound beside them; for the suite, each trace's cost ratio against attainment for every policy and
every keda-tuned setting of the frontier sweep."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobqueue_sim.bounds import pod_bound_at
from jobqueue_sim.model import Result
from jobqueue_sim.trace import TaskSpec


def timeline(path: Path, title: str, tasks: Sequence[TaskSpec], concurrency: int, series: Mapping[str, Result]) -> None:
    """Waiting tasks (orange) and pods (blue) over time, one panel per policy; grey: the pod bound's pods."""
    plt = _pyplot()
    fig, axes = plt.subplots(len(series), 1, figsize=(9, 1.7 * len(series) + 0.6), sharex=True, squeeze=False)
    for ax, (name, result) in zip(axes[:, 0], series.items(), strict=True):
        at = [s[0] for s in result.samples]
        minutes = [t / 60 for t in at]
        ax.fill_between(minutes, [s[1] for s in result.samples], step="post", color="tab:orange", alpha=0.5, lw=0)
        ax.set_ylabel("waiting", color="tab:orange", fontsize=8)
        ax.tick_params(labelsize=7)
        pods = ax.twinx()
        pods.step(minutes, pod_bound_at(tasks, concurrency, at), where="post", color="0.6", lw=0.8, label="pod bound")
        pods.step(minutes, [s[3] for s in result.samples], where="post", color="tab:blue", lw=1, label="pods")
        pods.set_ylabel("pods", color="tab:blue", fontsize=8)
        pods.tick_params(labelsize=7)
        pods.set_ylim(bottom=0)
        ax.set_title(name, fontsize=9, loc="left")
    axes[0, 0].figure.legend(*pods.get_legend_handles_labels(), loc="upper right", fontsize=7, frameon=False)
    axes[-1, 0].set_xlabel("minutes", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


def frontier(path: Path, traces: Mapping[str, Mapping[str, Any]], target: float) -> None:
    """Per trace: cost ratio (x) against the share of tasks within the target (y); grey dots every
    keda-tuned setting of the sweep, labelled points the suite's policies."""
    plt = _pyplot()
    from matplotlib import ticker

    cols = 4
    rows = math.ceil(len(traces) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.2 * cols, 2.6 * rows), squeeze=False)
    for ax, (name, record) in zip(axes.flat, traces.items(), strict=False):
        sweep = record["keda_frontier"]["settings"]
        ax.scatter([s["cost_ratio"] for s in sweep], [_floor(s["within_slo"]) for s in sweep], s=8, c="0.6")
        for row in record["policies"]:
            ours = row["policy"].startswith("jobqueue")
            at = (row["cost_ratio"], _floor(row["within_slo"]))
            ax.scatter(*at, s=30 if ours else 14, marker="*" if ours else "o")
            ax.annotate(row["policy"].replace("jobqueue-", ""), at, fontsize=6)
        ax.axhline(99, color="tab:red", lw=0.6, ls="--")
        ax.set_title(name, fontsize=9)
        ax.tick_params(labelsize=7)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        ax.set_ylim(FLOOR - 0.5, 100.3)
    for ax in list(axes.flat)[len(traces) :]:
        ax.set_visible(False)
    fig.supxlabel("worker-seconds / pod bound", fontsize=9)
    fig.supylabel(f"% of tasks within {target:g} s", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=72)
    plt.close(fig)


FLOOR = 90.0
"""The frontier plot's lowest attainment, %: settings below it are drawn on it."""


def _floor(share: float) -> float:
    return max(share * 100, FLOOR)


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt
