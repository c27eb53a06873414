"""Every trace in bench/traces under every policy, with the CRD's default knobs, into bench/results/autoscale/:
<trace>.json and .png, frontier.png, summary.json, the table, and the goals checked.
`python -m bench.autoscale.suite [--slo-wait S] [--out DIR] [--trace NAME ...]`.

Goals (for ours, latency mode with targetWaitSeconds = the SLO; backlog mode is reported beside it): at least
99 % of tasks within the target and none interrupted on every trace; cost ratio (worker-seconds / pod bound)
at most 1.3 as a geometric mean over the traces and at most 2.0 on each; and no keda-tuned setting of the
frontier sweep (frontier.py) cheaper at equal or better attainment.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from bench.autoscale import frontier, plot, tick_cost
from bench.autoscale.__main__ import record, run
from bench.autoscale.traces import TRACES_DIR
from jobqueue_sim import policies, report, shapes
from jobqueue_sim.model import Config

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results" / "autoscale"
OURS = "jobqueue-latency"
MODES = ("jobqueue-latency", "jobqueue-backlog")
ATTAINMENT_GOAL = 0.99
GEOMEAN_GOAL = 1.3
WORST_GOAL = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale.suite", description=__doc__)
    parser.add_argument("--slo-wait", type=float, default=30.0)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR)
    parser.add_argument("--trace", action="append", help="only these traces (names without .csv)")
    args = parser.parse_args()
    config, knobs = Config(), policies.Knobs(slo_wait_s=args.slo_wait)
    args.out.mkdir(parents=True, exist_ok=True)
    traces: dict[str, Any] = {}
    for path in sorted(TRACES_DIR.glob("*.csv")):
        if args.trace and path.stem not in args.trace:
            continue
        outcome = run(path, list(policies.NAMES), config, knobs)
        by = {r["policy"]: r for r in outcome["policies"]}
        sweep = frontier.sweep(outcome["tasks_list"], config, knobs, outcome["bounds"]["pod_bound_worker_s"], by[OURS])
        entry = {**record(outcome), "keda_frontier": sweep}
        print(f"\n{path.name}: {outcome['tasks']} tasks, SLO {knobs.slo_wait_s:g}s, bounds {outcome['bounds']}")
        print(report.table(outcome["policies"]))
        print(f"  KEDA frontier ({OURS}): {sweep['verdict']}")
        (args.out / f"{path.stem}.json").write_text(json.dumps(entry, indent=1) + "\n")
        title = f"{path.name} (SLO {knobs.slo_wait_s:g}s)"
        plot.timeline(
            args.out / f"{path.stem}.png", title, outcome["tasks_list"], config.concurrency, outcome["results"]
        )
        traces[path.stem] = {k: entry[k] for k in ("tasks", "bounds", "policies", "keda_frontier")}
    goals = {mode: check(traces, mode) for mode in MODES}
    for mode, verdict in goals.items():
        print(f"\n{mode}: " + "; ".join(f"{k}: {v}" for k, v in verdict.items() if k != "per_trace"))
    plot.frontier(args.out / "frontier.png", traces, knobs.slo_wait_s)
    (args.out / "table.md").write_text(markdown(traces, knobs.slo_wait_s))
    summary = {"config": outcome["config"], "knobs": outcome["knobs"], "goals": goals, "traces": traces}
    summary["tick_cost"] = tick_cost.measure(1000)
    print(f"\none operator tick for 1,000 queues: {summary['tick_cost']['ms_per_tick_median']:.1f} ms (median)")
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1) + "\n")


def check(traces: dict[str, Any], mode: str) -> dict[str, Any]:
    """The goals for one of our modes, over all traces and over the first seven shipped ones."""
    rows = {name: next(r for r in t["policies"] if r["policy"] == mode) for name, t in traces.items()}
    first = {n: r for n, r in rows.items() if n in shapes.FIRST_SEVEN}
    verdict: dict[str, Any] = {
        "attainment_met_on_every_trace": all(r["within_slo"] >= ATTAINMENT_GOAL for r in rows.values()),
        "missed_attainment": {
            n: round(r["within_slo"], 4) for n, r in rows.items() if r["within_slo"] < ATTAINMENT_GOAL
        },
        "zero_interrupted": all(r["interrupted"] == 0 for r in rows.values()),
        "cost_ratio_geomean_all": _geomean([r["cost_ratio"] for r in rows.values()]),
        "cost_ratio_geomean_first_seven": _geomean([r["cost_ratio"] for r in first.values()]) if first else None,
        "cost_ratio_worst": max(((r["cost_ratio"], n) for n, r in rows.items()), default=None),
        "over_2": {n: r["cost_ratio"] for n, r in rows.items() if r["cost_ratio"] > WORST_GOAL},
    }
    if mode == OURS:
        verdict["keda_dominates_on"] = [n for n, t in traces.items() if t["keda_frontier"]["dominating"]]
    return verdict


def markdown(traces: dict[str, Any], target: float) -> str:
    """The per-trace table of docs/autoscaling.md: every policy, then the KEDA frontier's verdict."""
    lines = [
        f"| trace | policy | within {target:g} s | p95 wait s | p99 wait s | worker-s | cost ratio | interrupted |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    verdicts = []
    for name, entry in traces.items():
        for r in entry["policies"]:
            lines.append(
                f"| {name} | {r['policy']} | {r['within_slo']:.2%} | {r['p95_wait_s']:.1f} | {r['p99_wait_s']:.1f} "
                f"| {r['worker_s']:.0f} | {r['cost_ratio']:.2f} | {r['interrupted']} |".replace("%", " %")
            )
        bound = entry["bounds"]
        verdicts.append(
            f"| {name} | {bound['pod_bound_worker_s']:.0f} | {bound['work_bound_worker_s']:.0f} "
            f"| {bound['zero_wait_startup_bound_worker_s']:.0f} | {entry['keda_frontier']['verdict']} |"
        )
    head = [
        "",
        "| trace | pod bound worker-s | work bound | zero-wait start-up bound | KEDA frontier (vs jobqueue-latency) |",
        "|---|---:|---:|---:|---|",
    ]
    return "\n".join(lines + head + verdicts) + "\n"


def _geomean(values: list[float]) -> float | None:
    return round(math.exp(sum(math.log(v) for v in values) / len(values)), 3) if values else None


if __name__ == "__main__":
    main()
