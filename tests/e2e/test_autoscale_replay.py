"""Issue 6 on the real local cluster: a short bursty trace of built-in `sleep` tasks replayed through a
JobQueue autoscaled from zero (`bench/autoscale_replay.py`, which also sets the run beside the simulator).

Asserted here are only the functional facts: the queue scaled up from zero workers and back to zero, and
every task was started and done exactly once (none lost, none interrupted and redelivered). The
worker-seconds and waits against the simulator's prediction are printed, not asserted: they are a
benchmark result (bench/results/autoscale_replay.json).
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from bench import autoscale_replay as replay
from jobqueue_devenv import demo
from jobqueue_sim import trace
from jobqueue_worker import records
from tests.e2e.conftest import Deploy


# A few minutes of real arrivals, scale-ups and idle periods: more than the default per-test limit.
@pytest.mark.timeout(900)
def test_a_bursty_trace_scales_from_zero_and_back_with_every_task_done_once(
    deploy: Deploy, kube: demo.Kube, tmp_path: Path
) -> None:
    settings = replay.Settings()
    tasks = trace.load(replay.TRACE)
    deployed = deploy(replay.manifest("replay", settings))
    run_id = uuid.uuid4().hex

    measured, record = replay.run(deployed.app, kube, deployed.namespace, "replay", tasks, settings, run_id)
    print(replay.table(record["comparison"]))
    (tmp_path / "autoscale_replay.json").write_text(json.dumps(record, indent=1))

    assert measured.samples[0].pods == 0  # started from zero workers
    assert record["measured"]["wakes_from_zero"] >= 1  # and scaled up from there
    assert (measured.samples[-1].pods, measured.samples[-1].replicas) == (0, 0)  # and back to zero
    started = records.read(deployed.redis, run_id, records.STARTED)
    done = records.read(deployed.redis, run_id, records.DONE)
    assert len(done) == len(tasks)
    assert set(done.values()) == {1}  # every task done exactly once
    assert started == done  # and started once: no run interrupted by a scale-down and redelivered
