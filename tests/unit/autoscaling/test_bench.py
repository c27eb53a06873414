"""The benchmark's entry points keep working: `python -m bench.autoscale --trace FILE --json OUT` and the
KEDA frontier sweep, on a tiny trace (the numbers are the benchmark's business, not asserted here)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.autoscale import frontier
from bench.autoscale.__main__ import main
from jobqueue_sim import bounds, policies, report, trace
from jobqueue_sim.model import Config, Simulation
from jobqueue_sim.trace import TaskSpec

TASKS = [TaskSpec(float(t), 2.0) for t in range(0, 60, 3)] + [TaskSpec(200.0, 5.0)] * 12


def test_one_trace_prints_writes_the_json_with_bounds_and_ratios_and_plots(tmp_path: Path, capsys: object) -> None:
    csv = tmp_path / "tiny.csv"
    trace.save(csv, TASKS)
    out = tmp_path / "out" / "tiny.json"
    main(["--trace", str(csv), "--json", str(out), "--policy", "jobqueue-latency", "--policy", "keda-tuned"])
    record = json.loads(out.read_text())
    assert record["bounds"]["pod_bound_worker_s"] == round(bounds.pod_bound(trace.load(csv), 4), 1)
    rows = {r["policy"]: r for r in record["policies"]}
    assert set(rows) == {"jobqueue-latency", "keda-tuned"}
    latency = rows["jobqueue-latency"]
    assert latency["cost_ratio"] == round(latency["worker_s"] / latency["pod_bound_worker_s"], 3)
    assert latency["lost"] == 0
    assert record["knobs"]["idle_before_zero_s"] is None  # ours run with the CRD's defaults
    assert out.with_suffix(".png").stat().st_size > 0


def test_the_frontier_lists_the_settings_that_beat_ours_and_says_so() -> None:
    config, knobs = Config(), policies.Knobs()
    bound = bounds.pod_bound(TASKS, config.concurrency)
    ours = report.summarize(
        "jobqueue-latency",
        Simulation(TASKS, policies.build("jobqueue-latency", TASKS, config, knobs), config).run(),
        knobs.slo_wait_s,
        bound,
    )
    sweep = frontier.sweep(TASKS, config, knobs, bound, ours)
    assert len(sweep["settings"]) == len(frontier.settings(TASKS, config, knobs))
    expected = [
        s for s in sweep["settings"] if s["within_slo"] >= ours["within_slo"] and s["worker_s"] < ours["worker_s"]
    ]
    assert sweep["dominating"] == expected
    assert ("no KEDA setting" in sweep["verdict"]) == (not expected)
