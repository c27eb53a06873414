"""Erlang C sizing and pod-deletion costs."""

from __future__ import annotations

import math

import pytest

from jobqueue_operator.autoscaling import DELETION_COST_ANNOTATION, deletion_costs, slots_for_wait


@pytest.mark.parametrize(
    ("target", "quantile", "slots"),
    # lambda 50/s, E[S] 200 ms: the worked example of the research notes (B3)
    [(2.0, 0.95, 11), (0.5, 0.95, 12), (0.1, 0.99, 15)],
)
def test_erlang_c_worked_example(target: float, quantile: float, slots: int) -> None:
    assert slots_for_wait(10.0, 0.2, target, quantile, 1.0, 1000) == slots


def test_answer_meets_the_bound_and_one_less_does_not() -> None:
    load, service, target, allowed = 37.0, 3.0, 5.0, 0.01
    c = slots_for_wait(load, service, target, 1 - allowed, 1.0, 10_000)
    assert _p_wait_longer(c, load, service, target) <= allowed
    assert _p_wait_longer(c - 1, load, service, target) > allowed


def test_no_load_needs_no_slots_and_limit_caps() -> None:
    assert slots_for_wait(0.0, 1.0, 1.0, 0.99, 1.0, 100) == 0
    assert slots_for_wait(500.0, 1.0, 1.0, 0.99, 1.0, 100) == 100


def test_large_loads_stay_finite() -> None:
    c = slots_for_wait(5000.0, 1.0, 1.0, 0.99, 1.0, 100_000)
    assert 5000 < c < 5200


def test_deletion_costs_put_idle_pods_first() -> None:
    costs = deletion_costs({"w-a": 3, "w-b": 0, "w-c": 1})
    assert costs == {"w-a": "3", "w-b": "0", "w-c": "1"}
    assert sorted(costs, key=lambda pod: int(costs[pod]))[0] == "w-b"
    assert DELETION_COST_ANNOTATION == "controller.kubernetes.io/pod-deletion-cost"


def _p_wait_longer(c: int, load: float, service: float, t: float) -> float:
    """P(Wq > t) in M/M/c from the closed form, summed directly (independent of the recurrence)."""
    terms = [load**k / math.factorial(k) for k in range(c)]
    top = load**c / math.factorial(c) * c / (c - load)
    return top / (sum(terms) + top) * math.exp(-(c - load) * t / service)
