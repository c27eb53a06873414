"""A picture of the per-queue dashboard's main panels, drawn from a real Prometheus during a burst.

    make monitoring-picture [OUT=path.png]   # = python -m jobqueue_monitoring.picture [--out path.png]

writes $TMPDIR/jobqueue-queue-dashboard.png unless told otherwise: the picture in the docs
(docs/images/queue-dashboard.png, tracked) changes only when you ask for it (OUT=docs/images/queue-dashboard.png).

starts a throw-away local cluster, runs the live scenario (jobqueue_monitoring.scenario: a queue woken from
zero by a priority burst, drained, scaled back to zero), and draws each panel from the panel's own queries
as the generated dashboard holds them (Grafana itself cannot run here), with the scaling-decision
annotations as markers on the workers panel.
"""

from __future__ import annotations

import argparse
import re
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Final

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.ticker import FuncFormatter, MaxNLocator

from jobqueue_monitoring import links, queries, scenario

OUT: Final = Path(tempfile.gettempdir()) / "jobqueue-queue-dashboard.png"
"""The default output: outside the repository (the docs' picture is tracked; refresh it on purpose)."""
PANELS: Final = [
    "Waiting and in-flight tasks",
    "Workers: desired, current, ready",
    "Waiting tasks by priority",
    "Oldest waiting task",
    "Tasks finished per second, by state",
    "Task run time (p50 / p95 / p99)",
]
BACKGROUND: Final = "#181b1f"
PANEL: Final = "#111217"
TEXT: Final = "#ccccdc"
GRID: Final = "#2c3235"
COLOURS: Final = ["#73bf69", "#f2cc0c", "#5794f2", "#ff9830", "#f2495c", "#b877d9", "#8ab8ff", "#fade2a"]
STEP: Final = 2.0


def _legend(template: str, labels: dict[str, str]) -> str:
    return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), template).strip()


def _formatter(unit: str) -> FuncFormatter:
    def fmt(value: float, _: Any) -> str:
        if unit == "percentunit":
            return f"{value * 100:.0f}%"
        if unit == "s":
            return f"{value:.1f} s" if value < 10 else f"{value:.0f} s"
        if unit == "ops":
            return f"{value:.1f}/s"
        return f"{value:.0f}" if abs(value) >= 1 or value == 0 else f"{value:.2f}"

    return FuncFormatter(fmt)


def _panel(title: str) -> dict[str, Any]:
    board = queries.dashboards()[links.QUEUE_UID]
    (found,) = [p for p in board["panels"] if p.get("title") == title]
    return dict(found)


def _series(live: scenario.Live, expr: str, queue: str) -> list[tuple[dict[str, str], list[float], list[float]]]:
    expanded = queries.expand(expr, live.namespace, scenario.JOBQUEUE, queue=queue)
    reply = live.prometheus.query_range(expanded, live.started - 20, live.ended + 2, STEP)
    found = []
    for item in reply.get("data", {}).get("result", []):
        times = [float(t) - live.started for t, _ in item["values"]]
        values = [float(v) for _, v in item["values"]]
        found.append((item["metric"], times, values))
    return found


def _style(ax: Axes, title: str, unit: str) -> None:
    ax.set_facecolor(PANEL)
    ax.set_title(title, color=TEXT, fontsize=10, loc="left")
    ax.tick_params(colors=TEXT, labelsize=8)
    ax.yaxis.set_major_formatter(_formatter(unit))
    if unit == "short":  # counts of tasks and Pods: whole numbers only
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(color=GRID, linewidth=0.6)
    for spine in ax.spines.values():
        spine.set_color(GRID)
    ax.set_xlabel("seconds since the burst was sent", color=TEXT, fontsize=8)


def _decisions(live: scenario.Live, queue: str) -> list[tuple[float, str]]:
    board = queries.dashboards()[links.QUEUE_UID]
    (annotation,) = [a for a in board["annotations"]["list"] if a.get("expr")]
    marks = []
    for labels, times, values in _series(live, annotation["expr"], queue):
        previous = 0.0
        for time, value in zip(times, values, strict=True):
            if value > 0 and previous == 0:
                marks.append((time, f"{labels.get('direction', '')}: {labels.get('reason', '')}"))
            previous = value
    return sorted(marks)


def heading(namespace: str, queue: str) -> str:
    """The picture's title: what was sent to the queue it draws, and only that."""
    return (
        f"JobQueue / Queue: {namespace}/{scenario.JOBQUEUE}, queue {queue}: {scenario.sent_to(queue)} "
        "(real Prometheus data)"
    )


def draw(
    live: scenario.Live, out: Path, queue: str = scenario.BURST_QUEUE, panels: Sequence[str] = PANELS
) -> list[str]:
    """Draw the panels for one queue into `out` (PNG); the titles of the panels that had data."""
    figure, axes = plt.subplots(3, 2, figsize=(14, 10), facecolor=BACKGROUND)
    with_data = []
    for ax, title in zip(axes.flat, panels, strict=True):
        panel = _panel(title)
        unit = panel["fieldConfig"]["defaults"].get("unit", "short")
        _style(ax, title, unit)
        dashed = [o["matcher"]["options"] for o in panel["fieldConfig"].get("overrides", [])]
        colour = 0
        for target in panel["targets"]:
            for labels, times, values in _series(live, target["expr"], queue):
                name = _legend(target.get("legendFormat", ""), labels)
                is_dashed = any(re.fullmatch(pattern, name) for pattern in dashed)
                ax.plot(times, values, label=name, linewidth=2 if is_dashed else 1.6,
                        linestyle="--" if is_dashed else "-", color=COLOURS[colour % len(COLOURS)])  # fmt: skip
                colour += 1
        if colour:
            with_data.append(title)
        if title.startswith("Workers"):
            for time, text in _decisions(live, queue):
                ax.axvline(time, color="#ff9830", linewidth=0.8, alpha=0.7)
                ax.annotate(text, (time, 0), xytext=(3, 4), textcoords="offset points", rotation=90,
                            color="#ff9830", fontsize=7, va="bottom")  # fmt: skip
        ax.set_ylim(bottom=0)
        legend = ax.legend(fontsize=7, loc="upper right", facecolor=PANEL, edgecolor=GRID)
        for text in legend.get_texts():
            text.set_color(TEXT)
    figure.suptitle(heading(live.namespace, queue), color=TEXT, fontsize=11)
    figure.tight_layout(rect=(0, 0, 1, 0.96))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=90, facecolor=BACKGROUND)
    plt.close(figure)
    return with_data


def main(argv: Sequence[str] | None = None) -> int:
    from jobqueue_devenv import binaries, cluster, demo

    parser = argparse.ArgumentParser(prog="python -m jobqueue_monitoring.picture", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    directory = Path(tempfile.mkdtemp(prefix="jobqueue-picture-"))
    found = binaries.ensure(tools=True)
    try:
        state, _ = cluster.up(directory / "cluster", found)
        kube = demo.Kube.for_cluster(state)
        with scenario.running(kube, directory, "picture") as live:
            scenario.burst(live)
            drawn = draw(live, args.out)
        print(f"wrote {args.out} ({len(drawn)} of {len(PANELS)} panels with data)")
    finally:
        cluster.down(directory / "cluster")
    return 0 if len(drawn) == len(PANELS) else 1


if __name__ == "__main__":
    raise SystemExit(main())
