"""scaling.py's pure helpers: policy mapping, pause, busy slots, and the status the tick writes."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import autoscaling, broker, rates, scaling, status
from jobqueue_operator.models import JobQueueStatus, Queue, QueueStatus


def test_the_crd_block_maps_onto_the_policy() -> None:
    queue = Queue.model_validate(
        {
            "name": "q",
            "concurrency": 4,
            "autoscaling": {
                "minReplicas": 1,
                "maxReplicas": 7,
                "targetTasksPerWorker": 8,
                "targetWaitSeconds": 30,
                "scaleDownStabilizationSeconds": 60,
                "idleSecondsBeforeZero": 90,
            },
        }
    )
    assert scaling.policy_for(queue, is_paused=True) == autoscaling.Policy(
        min_replicas=1,
        max_replicas=7,
        concurrency=4,
        target_tasks_per_worker=8,
        target_wait_seconds=30.0,
        scale_down_stabilization_seconds=60.0,
        idle_seconds_before_zero=90.0,
        paused=True,
    )


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        (None, False),
        ({}, False),
        ({scaling.PAUSE_ANNOTATION: "true"}, True),
        ({scaling.PAUSE_ANNOTATION: "True "}, True),
        ({scaling.PAUSE_ANNOTATION: "false"}, False),
        ({scaling.PAUSE_ANNOTATION: "yes"}, False),
    ],
)
def test_pause_annotation(annotations: dict[str, str] | None, expected: bool) -> None:
    assert scaling.paused(annotations) is expected


def test_an_unread_queue_is_an_observation_with_an_error_so_decide_holds() -> None:
    observed = scaling.observation(None, "redis down", 3, rates.Rates(None, None))
    assert observed.error == "redis down"
    decision = autoscaling.decide(observed, autoscaling.Policy(), autoscaling.History(), 0.0)
    assert (decision.replicas, decision.reason) == (3, autoscaling.Reason.METRICS_UNAVAILABLE)


def test_a_read_queue_carries_counts_and_rates() -> None:
    counts = broker.QueueCounts(ready=5, in_flight=2)
    observed = scaling.observation(counts, None, 1, rates.Rates(0.5, 2.0, 0.3))
    assert observed == autoscaling.Observation(5, 2, 1, 0.5, 2.0, 0.3)


def test_a_prometheus_value_replaces_the_waiting_count_rounded_up_and_keeps_in_flight_from_the_broker() -> None:
    counts = broker.QueueCounts(ready=5, in_flight=2)
    observed = scaling.observation(counts, None, 1, rates.Rates(0.5, 2.0, 0.3), waiting=6.2)
    assert observed == autoscaling.Observation(7, 2, 1, 0.5, 2.0, 0.3)


def test_a_failed_prometheus_query_holds_even_when_the_broker_was_read() -> None:
    observed = scaling.observation(broker.QueueCounts(0, 0), "no series", 3, rates.Rates(None, None))
    decision = autoscaling.decide(observed, autoscaling.Policy(), autoscaling.History(), 0.0)
    assert (decision.replicas, decision.reason) == (3, autoscaling.Reason.METRICS_UNAVAILABLE)
    assert "no series" in decision.message


def test_a_prometheus_value_without_the_broker_holds_too() -> None:
    observed = scaling.observation(None, "redis down", 2, rates.Rates(None, None), waiting=0.0)
    assert observed.error == "redis down"


def test_busy_slots_sum_the_active_tasks_gauge() -> None:
    text = (
        "# TYPE jobqueue_worker_active_tasks gauge\n"
        'jobqueue_worker_active_tasks{jobqueue="m",queue="q",task="a"} 2.0\n'
        'jobqueue_worker_active_tasks{jobqueue="m",queue="q",task="b"} 1.0\n'
        "# TYPE jobqueue_worker_concurrency gauge\n"
        'jobqueue_worker_concurrency{jobqueue="m",queue="q"} 4.0\n'
    )
    assert scaling.busy_slots(text) == 3
    assert scaling.busy_slots("") == 0


def _status_body(**queue: Any) -> dict[str, Any]:
    item = {"name": "q", "deployment": "m-q-worker", "replicas": 1, "readyReplicas": 1, "desiredReplicas": 1, **queue}
    return {"status": {"observedGeneration": 1, "queueCount": 1, "workers": "1/1", "queues": [item]}}


def test_the_tick_writes_backlog_fields_and_the_total() -> None:
    seen = {"q": status.QueueBacklog(4, 2, 12.7, "2030-01-01T00:00:00Z", (3, 2, 1))}
    patch = scaling.status_update(_status_body(), seen)
    assert patch is not None
    assert patch["backlog"] == 6
    assert patch["workers"] == "1/3"
    assert patch["queues"] == [
        {
            "name": "q",
            "deployment": "m-q-worker",
            "ready": 4,
            "inFlight": 2,
            "oldestTaskAgeSeconds": 12,
            "replicas": 2,
            "readyReplicas": 1,
            "desiredReplicas": 3,
            "lastScaleTime": "2030-01-01T00:00:00Z",
        }
    ]


def test_nothing_is_written_when_nothing_changed() -> None:
    body = _status_body(ready=0, inFlight=0)
    body["status"]["backlog"] = 0
    assert scaling.status_update(body, {"q": status.QueueBacklog(0, 0, None, None, (1, 1, 1))}) is None


def test_an_unreadable_broker_blanks_the_backlog_explicitly() -> None:
    body = _status_body(ready=3, inFlight=0)
    body["status"]["backlog"] = 3
    patch = scaling.status_update(body, {"q": status.QueueBacklog(None, None)})
    assert patch is not None
    assert patch["backlog"] is None
    assert "ready" not in patch["queues"][0]


def test_with_backlog_leaves_queues_the_tick_did_not_see() -> None:
    computed = JobQueueStatus(queues=[QueueStatus(name="a", desired_replicas=2), QueueStatus(name="b")])
    updated = status.with_backlog(computed, {"b": status.QueueBacklog(1, 0)})
    assert updated.queues[0] == computed.queues[0]
    assert updated.backlog is None  # "a" was not read


def test_a_restarted_operator_remembers_the_last_scale_time_from_the_status() -> None:
    memory = scaling.Memory()
    scaling.seed(memory, _status_body(lastScaleTime="2030-01-01T00:00:00Z"), ["q"])
    assert memory.queues["q"].last_scale_time == "2030-01-01T00:00:00Z"
