"""The KEDA frontier: keda-tuned swept over listLength, pollingInterval and the HPA's scale-down
stabilization window, to answer one question per trace: is any KEDA setting both cheaper than ours and at
equal or better attainment?

listLength runs from twice the AWS value (concurrency x target / mean run time) down to 1; pollingInterval
matters to KEDA only at zero replicas (activation and cooldown: with minReplicaCount 1 the HPA asks for
the metric itself every 15 s), so the sweep has minReplicaCount 1 (keda-tuned) and minReplicaCount 0 at
each polling interval, with a 60 s cooldownPeriod (tuned down from KEDA's 300 s).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from jobqueue_sim import policies, report
from jobqueue_sim.model import Config, Simulation
from jobqueue_sim.trace import TaskSpec

POLLING_S = (5.0, 15.0, 30.0)
STABILIZATION_S = (0.0, 60.0, 300.0)
COOLDOWN_S = 60.0
LIST_FACTORS = (2.0, 1.0, 0.5, 0.25, 0.125)


def settings(tasks: Sequence[TaskSpec], config: Config, knobs: policies.Knobs) -> list[dict[str, Any]]:
    """Every (listLength, minReplicaCount, pollingInterval, stabilization) of the sweep."""
    aws = policies.keda_tuned_list_length(tasks, config, knobs)
    lengths = sorted({max(1, round(aws * f)) for f in LIST_FACTORS} | {1}, reverse=True)
    grid = []
    for length in lengths:
        for stabilization in STABILIZATION_S:
            grid.append({"list_length": length, "min_replicas": 1, "polling_s": 5.0, "stabilization_s": stabilization})
            for polling in POLLING_S:
                grid.append(
                    {"list_length": length, "min_replicas": 0, "polling_s": polling, "stabilization_s": stabilization}
                )
    return grid


def sweep(
    tasks: Sequence[TaskSpec], config: Config, knobs: policies.Knobs, pod_bound: float, ours: dict[str, Any]
) -> dict[str, Any]:
    """Every setting's numbers, the ones that dominate `ours` (cheaper at equal or better attainment), and
    the cheapest setting at or above our attainment."""
    rows = []
    for setting in settings(tasks, config, knobs):
        controller = policies.Keda(
            "keda-tuned",
            setting["list_length"],
            setting["polling_s"],
            setting["min_replicas"],
            config.max_replicas,
            setting["stabilization_s"],
            cooldown_s=COOLDOWN_S,
        )
        result = Simulation(tasks, controller, config).run()
        summary = report.summarize("keda-tuned", result, knobs.slo_wait_s, pod_bound)
        keep = ("within_slo", "worker_s", "cost_ratio", "p99_wait_s", "interrupted", "below_in_flight")
        rows.append({**setting, **{k: summary[k] for k in keep}})
    reaching = [r for r in rows if r["within_slo"] >= ours["within_slo"]]
    dominating = [r for r in reaching if r["worker_s"] < ours["worker_s"]]
    return {
        "against": ours["policy"],
        "settings": rows,
        "dominating": dominating,
        "dominating_without_going_below_in_flight": [r for r in dominating if r["below_in_flight"] == 0],
        "cheapest_at_our_attainment": min(reaching, key=lambda r: r["worker_s"]) if reaching else None,
        "verdict": verdict(dominating, len(rows)),
    }


def verdict(dominating: Sequence[dict[str, Any]], swept: int) -> str:
    if not dominating:
        return f"no KEDA setting of {swept} is cheaper at equal or better attainment"
    cheapest = min(dominating, key=lambda r: r["worker_s"])
    safe = [r for r in dominating if r["below_in_flight"] == 0]
    return (
        f"{len(dominating)} of {swept} KEDA settings are cheaper at equal or better attainment, {len(safe)} of "
        f"them without scaling below the running tasks' slots (the cheapest, listLength {cheapest['list_length']}, "
        f"did {cheapest['below_in_flight']} times: the busy pods it stopped finished within the grace period "
        "here; tasks that outlast it would be interrupted)"
    )
