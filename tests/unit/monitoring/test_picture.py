"""`make monitoring-picture`: it leaves the tracked picture alone unless told, and its title says only what
the queue it draws received (it said "plus 6 failing" of the burst queue, whose panel has none)."""

from __future__ import annotations

from jobqueue_devenv.paths import REPO
from jobqueue_monitoring import picture, scenario


def test_the_default_output_is_outside_the_repository() -> None:
    assert REPO not in picture.OUT.resolve().parents


def test_the_title_of_the_burst_queue_says_what_it_received_and_no_failures() -> None:
    heading = picture.heading("ns", scenario.BURST_QUEUE)
    assert f"queue {scenario.BURST_QUEUE}:" in heading
    assert f"{scenario.BURST_TASKS} tasks" in heading
    assert f"{scenario.LONG_TASKS} of" in heading
    assert "failing" not in heading  # the failing tasks go to the steady queue


def test_the_title_of_the_steady_queue_names_its_failing_tasks() -> None:
    heading = picture.heading("ns", scenario.STEADY_QUEUE)
    assert f"{scenario.FAILING_TASKS} failing" in heading
    assert str(scenario.BURST_TASKS) not in heading
