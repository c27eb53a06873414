"""The fault-injection suite at CI size: each scenario of `jobqueue_devenv.faults.scenarios` on the real
cluster, with real Redis and workers, asserting its bounds (docs/faults.md). `make soak` runs the same
scenarios with at least 10,000 tasks."""

from __future__ import annotations

import pytest

from jobqueue_devenv import demo
from jobqueue_devenv.faults.scenarios import SCENARIOS, Scenario
from jobqueue_devenv.faults.stage import stage
from tests.e2e.faults.conftest import PREFIX


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_the_fault_loses_nothing_and_stays_within_its_bounds(
    scenario: Scenario, kube: demo.Kube, fault_operator: demo.RunningOperator, ledger_url: str
) -> None:
    with stage(kube, PREFIX, scenario.name, ledger_url) as here:
        outcome = scenario(here, scenario.ci, fault_operator)
    row = outcome.row()
    print(f"\n{row}")  # the numbers, for `pytest -s`
    assert outcome.verdict.tasks >= scenario.ci.tasks // 2, row  # the scenario really ran its load
    assert outcome.verdict.lost == frozenset(), row
    assert outcome.problems == [], row
