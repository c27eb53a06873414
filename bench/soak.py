"""The fault-injection suite at soak size: every scenario of `jobqueue_devenv.faults.scenarios` with at
least 10,000 tasks in all, on the local cluster; a table (scenario, tasks, lost, duplicated, interrupted,
recovery) and bench/results/soak.json.

    python -m bench.soak [--scenario NAME ...] [--scale 1.0] [--json OUT]

Needs KUBECONFIG pointing at a `jobqueue_devenv up` cluster (`make soak` starts one). Installs the chart
and runs the operator as the e2e tests do; each scenario gets its own namespace; the ledger is a Redis
no scenario faults. Exits 1 when any task was lost or any bound was broken.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from jobqueue_devenv import bench_results, cluster, demo
from jobqueue_devenv.faults.scenarios import SCENARIOS, Outcome, Scenario, Size
from jobqueue_devenv.faults.stage import ledger_broker, stage

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "soak.json"
COLUMNS = ("scenario", "tasks", "lost", "duplicated", "interrupted", "stuck", "faults", "recovery_median_s",
           "recovery_worst_s")  # fmt: skip


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in rows]
    total = {c: sum(r[c] for r in rows) for c in ("tasks", "lost", "duplicated", "interrupted", "stuck")}
    lines.append(f"total: {total['tasks']} tasks, {total['lost']} lost, {total['duplicated']} duplicated, "
                 f"{total['interrupted']} interrupted, {total['stuck']} stuck")  # fmt: skip
    return lines


def scaled(scenario: Scenario, scale: float) -> Size:
    return replace(scenario.soak, tasks=max(scenario.soak.faults, int(scenario.soak.tasks * scale)))


def run(kube: demo.Kube, scenarios: Sequence[Scenario], scale: float, logs: Path) -> list[Outcome]:
    session = uuid.uuid4().hex[:5]
    prefix = f"soak-{session}"
    outcomes = []
    with (
        demo.operator(kube, [f"{prefix}-*"], logs / "operator.log", f"jqsoak-{session}", f"jqsoak-{session}") as op,
        ledger_broker(kube, prefix) as ledger_url,
    ):
        for scenario in scenarios:
            size = scaled(scenario, scale)
            demo.say(f"{scenario.name}: {size.tasks} tasks, {size.faults} faults")
            started = time.time()
            with stage(kube, prefix, scenario.name, ledger_url) as here:
                try:
                    outcome = scenario(here, size, op)
                except Exception as exc:  # one scenario failing to run is reported, the others still run
                    outcome = Outcome(scenario.name, problems=[f"did not finish: {type(exc).__name__}: {exc}"])
            demo.say(f"{scenario.name}: {outcome.row()} in {time.time() - started:.0f} s")
            outcomes.append(outcome)
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    names = [s.name for s in SCENARIOS]
    parser.add_argument("--scenario", action="append", choices=names, help="run only these (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's task count")
    parser.add_argument("--json", type=Path, default=RESULT, help=f"default: {RESULT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if "KUBECONFIG" not in os.environ:
        raise SystemExit("KUBECONFIG is not set: run `make cluster-up` and its export line first")
    state = cluster.ClusterState.load(Path(os.environ["KUBECONFIG"]).parent)
    if state is None:
        raise SystemExit("KUBECONFIG does not point at a `jobqueue_devenv up` cluster")
    chosen = [s for s in SCENARIOS if s.name in args.scenario] if args.scenario else list(SCENARIOS)
    logs = args.json.parent / "soak-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    outcomes = run(demo.Kube.for_cluster(state), chosen, args.scale, logs)
    rows = [o.row() for o in outcomes]
    print("\n".join(table(rows)))
    problems = [f"{o.scenario}: {p}" for o in outcomes for p in o.problems]
    print("\n".join(problems) if problems else "every bound held")
    record = {
        "benchmark": "soak",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "seconds": round(time.time() - started, 1),
        "scale": args.scale,
        "scenarios": rows,
        "total": {c: sum(r[c] for r in rows) for c in ("tasks", "lost", "duplicated", "interrupted", "stuck")},
    }
    bench_results.write(args.json, record)
    lost = record["total"]["lost"]
    return 1 if lost or problems else 0


if __name__ == "__main__":
    sys.exit(main())
