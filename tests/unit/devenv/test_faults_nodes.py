"""The node faults' bookkeeping: extra measured times in a row, bounds by size, the node-loss benchmark's table."""

from __future__ import annotations

import time

from bench.nodeloss import rows, table
from bench.soak import scaled
from jobqueue_devenv.faults.node_scenarios import LEADER_BOUND_S, NODE_SCENARIOS
from jobqueue_devenv.faults.scenarios import RESTART_BOUND_S, SCENARIOS, Outcome, seconds_until


def test_measured_times_get_their_spread_in_the_row_and_a_miss_counts_as_infinite() -> None:
    outcome = Outcome("node-killed", recovery_s=[20.0])
    outcome.measure("replacements_ready", 50.0)
    outcome.measure("replacements_ready", 70.0)
    outcome.measure("leader", None)
    row = outcome.row()
    assert row["measured"]["replacements_ready"] == {"median_s": 60.0, "worst_s": 70.0}
    assert row["measured"]["leader"]["worst_s"] == float("inf")
    assert "measured" not in Outcome("quiet").row()


def test_a_time_is_measured_from_the_fault_when_given() -> None:
    fault = time.time() - 5
    seconds = seconds_until(lambda: True, timeout=1, what="now", interval=0.1, since=fault)
    assert seconds is not None
    assert seconds >= 5
    assert seconds_until(lambda: False, timeout=0.2, what="never", interval=0.1) is None


def test_node_scenarios_check_the_issues_numbers_at_soak_size_and_looser_ones_at_ci_size() -> None:
    assert all(s.soak.slack == 1.0 and s.ci.slack > 1.0 for s in NODE_SCENARIOS)
    assert all(scaled(s, 0.01).tasks >= s.soak.faults for s in NODE_SCENARIOS)
    names = [s.name for s in (*SCENARIOS, *NODE_SCENARIOS)]
    assert len(names) == len(set(names))
    assert {s.name for s in NODE_SCENARIOS} == {"node-killed", "node-drained", "operator-node-killed",
                                                "broker-node-killed"}  # fmt: skip


def test_the_node_loss_table_has_every_measure_and_flags_a_broken_bound() -> None:
    killed = Outcome("node-killed", recovery_s=[18.0, 22.0, 41.0])
    killed.measure("replacements_ready", 60.0)
    failover = Outcome("operator-node-killed", recovery_s=[20.0])
    failover.measure("leader", 11.0)
    found = rows([killed, failover])
    first = found[0]
    assert (first["runs"], first["median_s"], first["worst_s"], first["bound_s"]) == (3, 22.0, 41.0, RESTART_BOUND_S)
    assert not first["within"]
    leader = next(
        row for row in found if row["scenario"] == "operator-node-killed" and row["bound_s"] == LEADER_BOUND_S
    )
    assert (leader["worst_s"], leader["within"]) == (11.0, True)
    lines = table(found)
    assert lines[0].split()[:2] == ["measure", "runs"]
    assert lines[1].endswith("OVER")
    assert not lines[3].endswith("OVER")
