"""python -m bench.autoscale --trace FILE [--policy NAME ...] [--slo-wait S] [--concurrency N]
[--max-replicas N] --json OUT: simulate one trace under each policy; print the table (with each policy's
cost ratio against the trace's pod bound), write the JSON and, next to it, a PNG of backlog and pods over
time."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.autoscale import plot
from jobqueue_sim import bounds, policies, report, trace
from jobqueue_sim.model import Config, Result, Simulation


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    config = Config(
        concurrency=args.concurrency,
        max_replicas=args.max_replicas,
        startup_s=args.startup,
        grace_s=args.grace,
        redelivery_delay_s=args.redelivery_delay,
    )
    knobs = policies.Knobs(
        slo_wait_s=args.slo_wait,
        stabilization_s=args.stabilization,
        idle_before_zero_s=args.idle_before_zero,
        operator_tick_s=args.tick,
        stamped=args.stamped,
    )
    outcome = run(args.trace, args.policy or list(policies.NAMES), config, knobs)
    print(
        f"{args.trace.name}: {outcome['tasks']} tasks, SLO wait {knobs.slo_wait_s:g}s, "
        f"concurrency {config.concurrency}, pod bound {outcome['bounds']['pod_bound_worker_s']:.0f} worker-s"
    )
    print(report.table(outcome["policies"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(record(outcome), indent=1) + "\n")
    plot_path = args.plot or args.json.with_suffix(".png")
    title = f"{args.trace.name} (SLO {knobs.slo_wait_s:g}s)"
    plot.timeline(plot_path, title, outcome["tasks_list"], config.concurrency, outcome["results"])
    print(f"wrote {args.json} and {plot_path}")


def run(path: Path, names: list[str], config: Config, knobs: policies.Knobs) -> dict[str, Any]:
    """Every named policy over one trace: summaries and bounds, plus the raw results for the plot."""
    tasks = trace.load(path)
    pod_bound = bounds.pod_bound(tasks, config.concurrency)
    rows: list[dict[str, Any]] = []
    results: dict[str, Result] = {}
    for name in names:
        controller = policies.build(name, tasks, config, knobs)
        started = time.process_time()
        result = Simulation(tasks, controller, config).run()
        row = report.summarize(name, result, knobs.slo_wait_s, pod_bound)
        row["reasons"] = dict(controller.reasons)
        row["sim_cpu_s"] = round(time.process_time() - started, 2)
        rows.append(row)
        results[name] = result
    return {
        "trace": path.name,
        "tasks": len(tasks),
        "config": asdict(config),
        "knobs": asdict(knobs),
        "bounds": {
            "pod_bound_worker_s": round(pod_bound, 1),
            "work_bound_worker_s": round(bounds.work_bound(tasks, config.concurrency), 1),
            "zero_wait_startup_bound_worker_s": round(
                bounds.zero_wait_startup_bound(tasks, config.concurrency, config.startup_s), 1
            ),
        },
        "policies": rows,
        "results": results,
        "tasks_list": tasks,
    }


def record(outcome: dict[str, Any]) -> dict[str, Any]:
    """What goes into the JSON: everything but the raw results."""
    return {k: v for k, v in outcome.items() if k not in ("results", "tasks_list")}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale", description=__doc__)
    parser.add_argument("--trace", type=Path, required=True, help="CSV: arrival_s,service_s[,priority]")
    parser.add_argument("--policy", action="append", choices=policies.NAMES, help="repeat; default: all")
    parser.add_argument("--slo-wait", type=float, default=30.0, help="queue-wait target, seconds (30)")
    parser.add_argument("--concurrency", type=int, default=4, help="slots per pod (4)")
    parser.add_argument("--max-replicas", type=int, default=50, help="for every policy (50)")
    parser.add_argument("--startup", type=float, default=10.0, help="pod start-up delay, seconds (10)")
    parser.add_argument("--grace", type=float, default=30.0, help="baselines' termination grace, seconds (30)")
    parser.add_argument("--redelivery-delay", type=float, default=0.0, help="interrupted task re-queued after (0)")
    parser.add_argument(
        "--stabilization", type=float, default=0.0, help="ours: scaleDownStabilizationSeconds (CRD default 0)"
    )
    parser.add_argument(
        "--idle-before-zero", type=float, default=None, help="ours: idleSecondsBeforeZero (CRD default: automatic)"
    )
    parser.add_argument("--tick", type=float, default=5.0, help="ours: operator tick, seconds (5)")
    parser.add_argument(
        "--stamped", action="store_true", help="ours: producers stamp tasks, so the oldest wait is known exactly"
    )
    parser.add_argument("--json", type=Path, required=True, help="where the JSON goes")
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    return parser


if __name__ == "__main__":
    main()
