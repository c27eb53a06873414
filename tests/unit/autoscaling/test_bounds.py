"""jobqueue_sim.bounds: the yardsticks the benchmark measures policies against."""

from __future__ import annotations

import pytest

from jobqueue_sim.bounds import pod_bound, pod_bound_at, work_bound, zero_wait_startup_bound
from jobqueue_sim.trace import TaskSpec

# Three tasks at concurrency 2: two overlap for 5 s (one pod), then a third joins for 2 s (two pods).
TASKS = [TaskSpec(0.0, 10.0), TaskSpec(5.0, 5.0), TaskSpec(6.0, 2.0)]


def test_pod_bound_is_the_integral_of_pods_with_every_task_started_on_arrival() -> None:
    # 0-6: 1 pod (1 then 2 tasks), 6-8: 2 pods (3 tasks), 8-10: 1 pod
    assert pod_bound(TASKS, 2) == pytest.approx(6 + 4 + 2)
    assert pod_bound(TASKS, 1) == pytest.approx(17.0)  # one pod per task: the run times


def test_work_bound_is_the_run_time_per_slot() -> None:
    assert work_bound(TASKS, 2) == pytest.approx(8.5)


def test_the_zero_wait_bound_pays_a_start_up_per_rise_or_the_gap_if_that_is_cheaper() -> None:
    # level 1 rises once at 0 (10 s), level 2 rises at 6 (10 s): 12 + 20
    assert zero_wait_startup_bound(TASKS, 2, 10.0) == pytest.approx(32.0)
    # a second task 3 s after the first ended: keeping the pod (3 s) beats a new start-up (10 s)
    gap = [TaskSpec(0.0, 5.0), TaskSpec(8.0, 5.0)]
    assert zero_wait_startup_bound(gap, 1, 10.0) == pytest.approx(10 + 10 + 3)


def test_the_pod_bound_over_time_for_plots() -> None:
    assert pod_bound_at(TASKS, 2, [0.0, 5.5, 7.0, 9.0, 11.0]) == [1, 1, 2, 1, 0]
