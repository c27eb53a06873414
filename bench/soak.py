"""The fault-injection suite at soak size: every scenario of `jobqueue_devenv.faults.scenarios` with at
least 10,000 tasks in all, on the local cluster, then the node faults of `jobqueue_devenv.faults.node_scenarios`
on a cluster of three nodes, with the managed highly available broker's faults of
`jobqueue_devenv.faults.broker_scenarios`; a table (scenario, tasks, lost, duplicated, interrupted, recovery) and
bench/results/soak.json.

    python -m bench.soak [--scenario NAME ...] [--scale 1.0] [--json OUT]

Needs KUBECONFIG pointing at a `jobqueue_devenv up` cluster (`make soak` starts one). Installs the chart
and runs the operator as the e2e tests do; each scenario gets its own namespace; the ledger is a Redis
no scenario faults. The node faults run on that cluster if it has three nodes (`make soak NODES=3`),
else on a cluster of three nodes started for them and stopped afterwards. Exits 1 when any task was lost or
any bound was broken.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from jobqueue_devenv import bench_results, cluster, demo
from jobqueue_devenv.faults.broker_scenarios import BROKER_SCENARIOS
from jobqueue_devenv.faults.node_scenarios import NODE_SCENARIOS, NodeScenario
from jobqueue_devenv.faults.node_stage import bench_rig
from jobqueue_devenv.faults.scenarios import SCENARIOS, Outcome, Scenario, Size
from jobqueue_devenv.faults.stage import Stage, ledger_broker, stage

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "soak.json"
COLUMNS = ("scenario", "tasks", "lost", "duplicated", "interrupted", "stuck", "faults", "recovery_median_s",
           "recovery_worst_s")  # fmt: skip
TOTALS = ("tasks", "lost", "duplicated", "interrupted", "stuck")
"""The columns summed over every scenario."""


def table(rows: Sequence[dict[str, Any]]) -> list[str]:
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in COLUMNS}
    lines = ["  ".join(c.ljust(widths[c]) for c in COLUMNS)]
    lines += ["  ".join(str(r[c]).ljust(widths[c]) for c in COLUMNS) for r in rows]
    total = {c: sum(r[c] for r in rows) for c in TOTALS}
    lines.append(f"total: {total['tasks']} tasks, {total['lost']} lost, {total['duplicated']} duplicated, "
                 f"{total['interrupted']} interrupted, {total['stuck']} stuck")  # fmt: skip
    return lines


def scaled(scenario: Scenario | NodeScenario, scale: float) -> Size:
    return replace(scenario.soak, tasks=max(scenario.soak.faults, int(scenario.soak.tasks * scale)))


def run_one(
    kube: demo.Kube, prefix: str, ledger_url: str, name: str, size: Size, call: Callable[[Stage], Outcome]
) -> Outcome:
    """One scenario in its own namespace; one failing to run is reported, the others still run."""
    demo.say(f"{name}: {size.tasks} tasks, {size.faults} faults")
    started = time.time()
    with stage(kube, prefix, name, ledger_url) as here:
        try:
            outcome = call(here)
        except Exception as exc:
            outcome = Outcome(name, problems=[f"did not finish: {type(exc).__name__}: {exc}"])
    demo.say(f"{name}: {outcome.row()} in {time.time() - started:.0f} s")
    return outcome


def finish(outcomes: Sequence[Outcome], benchmark: str, started: float, path: Path, **fields: Any) -> int:
    """After the table: every problem (or that every bound held), the JSON record written to `path`, and the
    exit code: 1 when a task was lost or a bound broken."""
    problems = [f"{o.scenario}: {p}" for o in outcomes for p in o.problems]
    print("\n".join(problems) if problems else "every bound held")
    when = datetime.now(UTC).isoformat(timespec="seconds")
    record = {"benchmark": benchmark, "when": when, "seconds": round(time.time() - started, 1), **fields}
    bench_results.write(path, record)
    lost = sum(o.row()["lost"] for o in outcomes)
    return 1 if lost or problems else 0


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
            call = partial(scenario, size=size, operator=op)
            outcomes.append(run_one(kube, prefix, ledger_url, scenario.name, size, call))
    return outcomes


def run_nodes(
    state: cluster.ClusterState, scenarios: Sequence[NodeScenario], scale: float, logs: Path
) -> list[Outcome]:
    """The node faults, on `state` if it has three nodes, else on a cluster of three started for them."""
    outcomes = []
    with bench_rig(state, "soakn", logs / "node-operator.log") as (here_rig, prefix):
        for scenario in scenarios:
            size = scaled(scenario, scale)
            call = partial(scenario, size=size, rig=here_rig)
            outcomes.append(run_one(here_rig.kube, prefix, here_rig.ledger_url, scenario.name, size, call))
    return outcomes


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    names = [s.name for s in (*SCENARIOS, *NODE_SCENARIOS, *BROKER_SCENARIOS)]
    parser.add_argument("--scenario", action="append", choices=names, help="run only these (default: all)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every scenario's task count")
    parser.add_argument("--json", type=Path, default=RESULT, help=f"default: {RESULT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    if "KUBECONFIG" not in os.environ:
        raise SystemExit("KUBECONFIG is not set: run `make cluster-up` and its export line first")
    state = cluster.ClusterState.load(Path(os.environ["KUBECONFIG"]).parent)
    if state is None:
        raise SystemExit("KUBECONFIG does not point at a `jobqueue_devenv up` cluster")
    chosen = [s for s in SCENARIOS if not args.scenario or s.name in args.scenario]
    chosen_nodes = [s for s in (*NODE_SCENARIOS, *BROKER_SCENARIOS) if not args.scenario or s.name in args.scenario]
    logs = args.json.parent / "soak-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    outcomes = run(demo.Kube.for_cluster(state), chosen, args.scale, logs) if chosen else []
    outcomes += run_nodes(state, chosen_nodes, args.scale, logs) if chosen_nodes else []
    rows = [o.row() for o in outcomes]
    print("\n".join(table(rows)))
    total = {c: sum(r[c] for r in rows) for c in TOTALS}
    return finish(outcomes, "soak", started, args.json, scale=args.scale, scenarios=rows, total=total)


if __name__ == "__main__":
    sys.exit(main())
