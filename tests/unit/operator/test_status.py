from __future__ import annotations

from jobqueue_operator import status
from jobqueue_operator.models import Condition

BROKER_OK = status.BrokerState(True, "BrokerReachable", "ok")
T0, T1 = "2026-01-01T00:00:00Z", "2026-01-01T00:01:00Z"


def _by_type(conditions: list[Condition]) -> dict[str, Condition]:
    return {c.type: c for c in conditions}


def test_all_served_is_ready() -> None:
    queues = [status.QueueObservation("a", "x-a-worker", desired=2, replicas=2, ready=1, available=1)]
    computed = status.compute(status.Observation(3, BROKER_OK, queues), [], T0)
    conditions = _by_type(computed.conditions)
    assert conditions["Ready"].status == "True"
    assert conditions["Ready"].reason == "AllQueuesAvailable"
    assert conditions["Degraded"].status == "False"
    assert all(c.observed_generation == 3 for c in computed.conditions)
    assert computed.observed_generation == 3
    assert computed.workers == "1/2"
    assert computed.queue_count == 1
    assert computed.backlog is None


def test_a_queue_at_zero_wanted_replicas_is_served() -> None:
    queues = [status.QueueObservation("a", "x-a-worker", desired=0)]
    computed = status.compute(status.Observation(1, BROKER_OK, queues), [], T0)
    assert _by_type(computed.conditions)["WorkersAvailable"].status == "True"


def test_unavailable_workers_name_the_queue() -> None:
    queues = [status.QueueObservation("a", "x-a-worker", desired=1), status.QueueObservation("b", "x-b", desired=0)]
    ready = _by_type(status.compute(status.Observation(1, BROKER_OK, queues), [], T0).conditions)["Ready"]
    assert ready.status == "False"
    assert ready.reason == "WorkersUnavailable"
    assert "a (0/1 available)" in ready.message
    assert "b " not in ready.message


def test_broker_down_is_not_ready_and_degraded() -> None:
    down = status.BrokerState(False, "BrokerUnreachable", "redis://h:1 does not answer PING")
    conditions = _by_type(status.compute(status.Observation(1, down, []), [], T0).conditions)
    assert conditions["BrokerReady"].status == "False"
    assert conditions["Ready"].reason == "BrokerUnreachable"
    assert conditions["Degraded"].status == "True"


def test_problems_come_first() -> None:
    problem = status.Problem("ApplyFailed", "Deployment x: forbidden")
    observation = status.Observation(1, BROKER_OK, [], problems=[problem])
    conditions = _by_type(status.compute(observation, [], T0).conditions)
    assert (conditions["Ready"].reason, conditions["Ready"].message) == ("ApplyFailed", "Deployment x: forbidden")
    assert conditions["Degraded"].reason == "ApplyFailed"


def test_stalled_deployment_is_degraded() -> None:
    queues = [status.QueueObservation("a", "x", desired=1, available=1, stalled=True)]
    conditions = _by_type(status.compute(status.Observation(1, BROKER_OK, queues), [], T0).conditions)
    assert conditions["Degraded"].reason == "WorkersStalled"


def test_transition_time_moves_only_when_the_status_changes() -> None:
    first = status.compute(status.Observation(1, BROKER_OK, []), [], T0).conditions
    same = _by_type(status.compute(status.Observation(2, BROKER_OK, []), first, T1).conditions)
    assert same["Ready"].last_transition_time == T0
    assert same["Ready"].observed_generation == 2
    down = status.BrokerState(False, "BrokerUnreachable", "no")
    changed = _by_type(status.compute(status.Observation(2, down, []), first, T1).conditions)
    assert changed["Ready"].last_transition_time == T1


def test_set_condition_keeps_order_and_others() -> None:
    other = Condition(type="Custom", status="True", last_transition_time=T0)
    updated = status.set_condition([other], "Ready", "True", "R", "m", 1, T1)
    assert [c.type for c in updated] == ["Custom", "Ready"]
    again = status.set_condition(updated, "Ready", "False", "R2", "m2", 2, T1)
    assert [c.type for c in again] == ["Custom", "Ready"]
    assert again[0] is other


def test_depths_make_the_backlog() -> None:
    """The reconciler's part has the Deployment's fields, the autoscaler's the broker's: each applies its own."""
    queues = [status.QueueObservation("a", "x"), status.QueueObservation("b", "y")]
    computed = status.compute(status.Observation(1, BROKER_OK, queues), [], T0)
    assert computed.backlog is None
    assert computed.to_body()["queues"][0] == {
        "name": "a",
        "deployment": "x",
        "replicas": 0,
        "readyReplicas": 0,
        "desiredReplicas": 0,
    }
    depths = {"a": status.QueueDepth(3, 0), "b": status.QueueDepth(4, 0)}
    ticked = status.autoscaler(depths, [], None, [], 1, T0)
    assert ticked.backlog == 7
    assert ticked.to_body()["queues"][0] == {"name": "a", "ready": 3, "inFlight": 0}
