"""The fault checker counts lost, duplicated, interrupted and stuck tasks from a ledger."""

from __future__ import annotations

from jobqueue_devenv.faults.checker import check, spread


def test_every_task_once_is_clean() -> None:
    verdict = check(["a", "b"], {"a": 1, "b": 1}, {"a": 1, "b": 1})
    assert verdict.counts() == {"tasks": 2, "lost": 0, "duplicated": 0, "interrupted": 0, "stuck": 0, "unknown": 0}


def test_never_done_is_lost_and_started_never_done_is_stuck() -> None:
    verdict = check(["a", "b", "c"], {"a": 1, "b": 1}, {"a": 1})
    assert verdict.lost == {"b", "c"}
    assert verdict.stuck == {"b"}


def test_restart_counts_as_interrupted_and_duplicated_unless_allowed() -> None:
    assert check(["a"], {"a": 2}, {"a": 1}).duplicated == {"a"}
    allowed = check(["a"], {"a": 2}, {"a": 1}, may_restart={"a"})
    assert allowed.duplicated == frozenset()
    assert allowed.interrupted == {"a"}


def test_done_twice_is_duplicated_even_when_restarts_are_allowed() -> None:
    assert check(["a"], {"a": 2}, {"a": 2}, may_restart={"a"}).duplicated == {"a"}


def test_dead_lettered_tasks_are_not_lost() -> None:
    verdict = check(["poison", "a"], {"poison": 3, "a": 1}, {"a": 1}, may_restart={"poison"}, dead_lettered={"poison"})
    assert verdict.lost == frozenset()
    assert verdict.stuck == frozenset()


def test_ids_never_sent_are_reported() -> None:
    assert check(["a"], {"a": 1, "x": 1}, {"a": 1}).unknown == {"x"}


def test_spread_gives_median_and_worst() -> None:
    assert spread([1.0, 3.0, 2.0]) == {"median": 2.0, "worst": 3.0}
    assert spread([]) == {"median": None, "worst": None}
