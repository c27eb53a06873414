"""python -m bench.autoscale --trace FILE [--policy NAME ...] [--slo-wait S] [--concurrency N]
[--max-replicas N] --json OUT: simulate one trace under each policy; print the table, write the JSON and,
next to it, a PNG of backlog and pods over time."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bench.autoscale import policies, report, trace
from bench.autoscale.sim import Config, Result, Simulation


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
    )
    outcome = run(args.trace, args.policy or list(policies.NAMES), config, knobs)
    print(
        f"{args.trace.name}: {outcome['tasks']} tasks, SLO wait {knobs.slo_wait_s:g}s, concurrency {config.concurrency}"
    )
    print(report.table(outcome["policies"]))
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({k: v for k, v in outcome.items() if k != "results"}, indent=1) + "\n")
    plot_path = args.plot or args.json.with_suffix(".png")
    report.plot(plot_path, f"{args.trace.name} (SLO {knobs.slo_wait_s:g}s)", outcome["results"])
    print(f"wrote {args.json} and {plot_path}")


def run(path: Path, names: list[str], config: Config, knobs: policies.Knobs) -> dict[str, Any]:
    """Every named policy over one trace: summaries, plus the raw results for the plot."""
    tasks = trace.load(path)
    rows: list[dict[str, Any]] = []
    results: dict[str, Result] = {}
    for name in names:
        controller = policies.build(name, tasks, config, knobs)
        started = time.process_time()
        result = Simulation(tasks, controller, config).run()
        row = report.summarize(name, result, knobs.slo_wait_s)
        row["reasons"] = dict(controller.reasons)
        row["sim_cpu_s"] = round(time.process_time() - started, 2)
        rows.append(row)
        results[name] = result
    return {
        "trace": path.name,
        "tasks": len(tasks),
        "config": asdict(config),
        "knobs": asdict(knobs),
        "policies": rows,
        "results": results,
    }


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
    parser.add_argument("--stabilization", type=float, default=60.0, help="ours: scale-down window, seconds (60)")
    parser.add_argument("--idle-before-zero", type=float, default=60.0, help="ours: idle before zero, seconds (60)")
    parser.add_argument("--tick", type=float, default=5.0, help="ours: operator tick, seconds (5)")
    parser.add_argument("--json", type=Path, required=True, help="where the JSON goes")
    parser.add_argument("--plot", type=Path, help="PNG path (default: the JSON path with .png)")
    return parser


if __name__ == "__main__":
    main()
