"""The node faults at CI size (`jobqueue_devenv.faults.node_scenarios`): power cuts and a drain on the three-node
cluster the three-node modules share, one after the other (tests/conftest.py `three_nodes`: a power cut must
never hit the session cluster's other tests), with the operator installed as the chart installs it (two
replicas, leader election), real Redis and workers, each scenario asserting its bounds (docs/faults.md).
Every scenario boots the node it killed again, so the next one starts with three. `make soak` runs the same
scenarios at full size and checks the issue's own bounds.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobqueue_devenv import cluster, demo
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.faults.node_scenarios import NODE_SCENARIOS, NodeScenario
from jobqueue_devenv.faults.node_stage import Rig, rig
from jobqueue_devenv.faults.stage import stage
from tests.e2e.conftest import SESSION

PREFIX = f"e2n-{SESSION}"


@pytest.fixture(scope="module")
def node_rig(three_nodes: cluster.ClusterState, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    try:
        demo.require_images()
    except DevenvError as exc:
        pytest.fail(f"{exc.cause}: {exc.remedy}")
    log = tmp_path_factory.mktemp("node-operator") / "operator.log"
    with rig(demo.Kube.for_cluster(three_nodes), PREFIX, log, f"jqnodes-{SESSION}") as running:
        yield running


@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", NODE_SCENARIOS, ids=[s.name for s in NODE_SCENARIOS])
def test_the_node_fault_loses_nothing_and_stays_within_its_bounds(scenario: NodeScenario, node_rig: Rig) -> None:
    with stage(node_rig.kube, PREFIX, scenario.name, node_rig.ledger_url) as here:
        outcome = scenario(here, scenario.ci, node_rig)
    row = outcome.row()
    print(f"\n{row}")  # the numbers, for `pytest -s`
    assert outcome.verdict.tasks >= scenario.ci.tasks // 2, row  # the scenario really ran its load
    assert outcome.verdict.lost == frozenset(), row
    assert outcome.problems == [], row
