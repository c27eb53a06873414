"""broker_memory: when a broker counts as full, and when the operator opens and closes a managed broker's
memory reserve; the BrokerMemoryAvailable condition the tick writes from it."""

from __future__ import annotations

from decimal import Decimal

import pytest

from jobqueue_operator import broker, broker_memory, status
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason
from jobqueue_operator.scaling import decide
from jobqueue_operator.scaling.decide import Seen

MIB = 2**20
BOUNDS = broker_memory.Bounds(normal=80 * MIB, reserve=85 * MIB)


def test_the_bounds_are_shares_of_the_memory_limit_and_none_without_one() -> None:
    assert broker_memory.bounds(Decimal(100 * MIB)) == BOUNDS
    assert broker_memory.bounds(None) is None


@pytest.mark.parametrize(
    ("used_mib", "maxmemory", "full", "open_", "set_to"),
    [
        (40, BOUNDS.normal, False, False, None),  # plenty of room
        (76, BOUNDS.normal, True, True, BOUNDS.reserve),  # 95 % of the normal one: open
        (81, BOUNDS.normal, True, True, BOUNDS.reserve),  # over it (refusing everything): open
        (83, BOUNDS.reserve, True, True, None),  # open and still full: stay
        (60, BOUNDS.reserve, False, True, None),  # draining, above 70 % of normal: stay open
        (55, BOUNDS.reserve, False, False, BOUNDS.normal),  # drained below 70 %: close
        (55, 200 * MIB, False, False, None),  # set by hand: left alone
        (195, 200 * MIB, True, False, None),  # ... and full by its own measure
    ],
)
def test_a_managed_broker_opens_its_reserve_when_full_and_closes_it_once_drained(
    used_mib: int, maxmemory: int, full: bool, open_: bool, set_to: int | None
) -> None:
    verdict = broker_memory.assess(used_mib * MIB, maxmemory, BOUNDS)
    assert verdict == broker_memory.Verdict(full=full, reserve_open=open_, set_maxmemory=set_to)


def test_an_external_broker_is_only_measured_never_reconfigured() -> None:
    assert broker_memory.assess(96 * MIB, 100 * MIB, None) == broker_memory.Verdict(full=True, reserve_open=False)
    assert broker_memory.assess(10 * MIB, 0, None) is None  # no maxmemory: nothing to be full of


def _managed(limit: str | None) -> JobQueue:
    resources = {"resources": {"limits": {"memory": limit}}} if limit else {}
    return JobQueue.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "generation": 1},
            "spec": {"image": "i", "app": "a", "broker": {"managed": resources}, "queues": [{"name": "q"}]},
        }
    )


def _plan(jq: JobQueue, used: int, maxmemory: int) -> decide.TickPlan:
    seen = Seen(jq, 1e9, {"q": broker.QueueCounts(0, 0)}, memory=(used, maxmemory))
    return decide.plan(seen, {}, {})


def test_the_builder_and_the_tick_agree_on_the_normal_maxmemory() -> None:
    jq = _managed("100Mi")
    assert jq.spec.broker.managed is not None
    assert redis_build.maxmemory(jq.spec.broker.managed) == BOUNDS.normal
    assert redis_build.memory_bounds(jq.spec.broker.managed) == BOUNDS


def test_the_tick_opens_the_reserve_and_the_condition_says_why() -> None:
    plan = _plan(_managed("100Mi"), 81 * MIB, BOUNDS.normal)
    assert plan.maxmemory == BOUNDS.reserve
    state, reason, message = plan.conditions[status.BROKER_MEMORY_AVAILABLE]
    assert (state, reason) == ("False", Reason.BROKER_MEMORY_FULL)
    assert "85.0 MiB" in message
    assert "workers can take and finish tasks" in message
    assert [e.reason for e in plan.events] == [Reason.BROKER_MEMORY_FULL]  # turning False: a Warning


def test_a_draining_broker_is_not_called_available_until_its_reserve_closes() -> None:
    draining = _plan(_managed("100Mi"), 60 * MIB, BOUNDS.reserve)
    assert draining.maxmemory is None
    assert draining.conditions[status.BROKER_MEMORY_AVAILABLE][:2] == ("False", Reason.BROKER_MEMORY_DRAINING)
    drained = _plan(_managed("100Mi"), 50 * MIB, BOUNDS.reserve)
    assert drained.maxmemory == BOUNDS.normal  # closed by this tick, so available
    assert drained.conditions[status.BROKER_MEMORY_AVAILABLE][:2] == ("True", Reason.BROKER_MEMORY_AVAILABLE)


def test_a_full_reserve_says_the_producers_outrun_the_workers() -> None:
    plan = _plan(_managed("100Mi"), 84 * MIB, BOUNDS.reserve)
    assert plan.maxmemory is None
    assert "add workers or slow the producers" in plan.conditions[status.BROKER_MEMORY_AVAILABLE][2]


def test_a_managed_broker_without_a_memory_limit_has_no_memory_condition() -> None:
    plan = _plan(_managed(None), 500 * MIB, 0)
    assert status.BROKER_MEMORY_AVAILABLE not in plan.conditions
    assert plan.maxmemory is None
