"""A scenario's outcome: bounds broken are named, the soak's row and table carry the numbers."""

from __future__ import annotations

from bench.soak import scaled, table
from jobqueue_devenv.faults.broker_process import local_addresses
from jobqueue_devenv.faults.checker import check
from jobqueue_devenv.faults.scenarios import SCENARIOS, Outcome, Size


def test_a_broken_bound_is_named_and_a_kept_one_is_not() -> None:
    outcome = Outcome("x")
    outcome.within(3.0, 30.0, "restarted")
    outcome.within(None, 30.0, "redelivered")
    outcome.within(31.0, 30.0, "ready")
    outcome.expect(True, "fine")
    assert outcome.problems == ["redelivered: None s, bound 30.0 s", "ready: 31.0 s, bound 30.0 s"]


def test_the_row_has_the_counts_and_the_recovery_spread() -> None:
    outcome = Outcome(
        "worker-killed", check(["a", "b"], {"a": 2, "b": 1}, {"a": 1}, may_restart={"a"}), [1.0, 4.0, 2.5]
    )
    row = outcome.row()
    assert (row["tasks"], row["lost"], row["interrupted"], row["duplicated"]) == (2, 1, 1, 0)
    assert (row["recovery_median_s"], row["recovery_worst_s"], row["faults"]) == (2.5, 4.0, 3)


def test_the_table_totals_every_scenario() -> None:
    rows = [Outcome("a", check(["1", "2"], {}, {"1": 1, "2": 1})).row(), Outcome("b", check(["3"], {}, {})).row()]
    lines = table(rows)
    assert lines[0].split()[:3] == ["scenario", "tasks", "lost"]
    assert lines[-1] == "total: 3 tasks, 1 lost, 0 duplicated, 0 interrupted, 0 stuck"


def test_a_fault_always_gets_at_least_one_task_and_the_soak_sends_ten_thousand() -> None:
    assert Size(3, 5).per_fault() == 1
    assert Size(100, 3).per_fault() == 33
    assert sum(s.soak.tasks for s in SCENARIOS) >= 10_000
    assert all(scaled(s, 0.01).tasks >= s.soak.faults for s in SCENARIOS)
    assert len({s.name for s in SCENARIOS}) == len(SCENARIOS)


def test_the_addresses_of_a_network_namespace_are_read_from_its_fib_trie() -> None:
    fib_trie = """Main:
  +-- 0.0.0.0/1 2 0 2
        +-- 10.213.0.0/24 2 0 2
              |-- 10.213.0.0
                 /24 link UNICAST
              |-- 10.213.0.4
                 /32 host LOCAL
           |-- 10.213.0.255
              /32 link BROADCAST
           |-- 127.0.0.1
              /32 host LOCAL
"""
    assert local_addresses(fib_trie) == {"10.213.0.4", "127.0.0.1"}
