"""Redelivery after a node loss, and the operator's failover when its leader's node is lost: N power cuts
each, on a cluster of three nodes; median and worst of every measured time, a table and
bench/results/nodeloss.json.

    python -m bench.nodeloss [--kills N] [--tasks-per-kill T] [--json OUT]

The measurements are the node fault scenarios' own (`jobqueue_devenv.faults.node_scenarios`), run with N
faults: `node-killed` (a node of two busy workers powered off: the power cut to every task those workers
held having started again on another node; replacement workers Ready elsewhere) and `operator-node-killed`
(the node of the operator's leader powered off: the standby holding the Lease; a queue at zero that gets a
burst scaled up). Runs on the KUBECONFIG cluster if it has three nodes, else starts one and stops it after.
Exits 1 when a task was lost or a bound broken.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from bench.soak import finish, run_one
from jobqueue_devenv import cluster
from jobqueue_devenv.faults import node_scenarios
from jobqueue_devenv.faults.checker import spread
from jobqueue_devenv.faults.node_scenarios import NodeScenario
from jobqueue_devenv.faults.node_stage import bench_rig
from jobqueue_devenv.faults.scenarios import RESTART_BOUND_S, Outcome, Size

REPO = Path(__file__).resolve().parent.parent
RESULT = REPO / "bench" / "results" / "nodeloss.json"
MEASURES: Final = (
    # (label, scenario, measured name or "" for the recovery, bound in seconds)
    ("redelivery: power cut -> lost tasks started again", "node-killed", "", RESTART_BOUND_S),
    ("replacement workers Ready on other nodes", "node-killed", "replacements_ready",
     node_scenarios.REPLACEMENT_BOUND_S),
    ("operator: power cut -> standby leads", "operator-node-killed", "leader", node_scenarios.LEADER_BOUND_S),
    ("operator: power cut -> queue at zero scaled up", "operator-node-killed", "",
     node_scenarios.SCALE_UP_BOUND_S),
)  # fmt: skip
SCENARIOS: Final = tuple(s for s in node_scenarios.NODE_SCENARIOS if s.name in {m[1] for m in MEASURES})


def rows(outcomes: Sequence[Outcome]) -> list[dict[str, Any]]:
    """One row per measure: runs, median, worst, bound, within."""
    by_name = {outcome.scenario: outcome for outcome in outcomes}
    found = []
    for label, scenario, name, bound in MEASURES:
        outcome = by_name.get(scenario)
        seconds = [] if outcome is None else (outcome.measured.get(name, []) if name else outcome.recovery_s)
        times = spread(seconds)
        worst = times["worst"]
        found.append({
            "measure": label,
            "scenario": scenario,
            "runs": len(seconds),
            "median_s": None if times["median"] is None else round(times["median"], 2),
            "worst_s": None if worst is None else round(worst, 2),
            "bound_s": bound,
            "within": worst is not None and worst <= bound,
        })  # fmt: skip
    return found


def table(found: Sequence[dict[str, Any]]) -> list[str]:
    width = max(len(row["measure"]) for row in found)
    lines = [f"{'measure':<{width}}  runs  median_s  worst_s  bound_s"]
    for row in found:
        verdict = "" if row["within"] else "  OVER"
        lines.append(
            f"{row['measure']:<{width}}  {row['runs']:>4}  {row['median_s']!s:>8}  {row['worst_s']!s:>7}  "
            f"{row['bound_s']:>7g}{verdict}"
        )
    return lines


def run(state: cluster.ClusterState | None, scenarios: Sequence[NodeScenario], size: Size, logs: Path) -> list[Outcome]:
    with bench_rig(state, "nodeloss", logs / "operator.log") as (here_rig, prefix):
        return [
            run_one(here_rig.kube, prefix, here_rig.ledger_url, s.name, size, partial(s, size=size, rig=here_rig))
            for s in scenarios
        ]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.nodeloss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=5, help="power cuts per measurement (default 5)")
    parser.add_argument("--tasks-per-kill", type=int, default=100, help="tasks sent per power cut (default 100)")
    parser.add_argument("--json", type=Path, default=RESULT, help=f"default: {RESULT.relative_to(REPO)}")
    args = parser.parse_args(argv)
    kubeconfig = os.environ.get("KUBECONFIG")
    state = cluster.ClusterState.load(Path(kubeconfig).parent) if kubeconfig else None
    size = Size(args.kills * args.tasks_per_kill, args.kills)
    logs = args.json.parent / "nodeloss-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    outcomes = run(state, SCENARIOS, size, logs)
    found = rows(outcomes)
    print("\n".join(table(found)))
    scenarios = [o.row() for o in outcomes]
    return finish(outcomes, "nodeloss", started, args.json, kills=args.kills, measures=found, scenarios=scenarios)


if __name__ == "__main__":
    sys.exit(main())
