"""The tick's pure decisions (scaling/decide.py): policy mapping, pause, observation, busy slots, the status the
autoscaler owns, and its memory kept in the status across an operator restart."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import autoscaling, broker, naming, podmetrics, rates, status
from jobqueue_operator.models import JobQueue, Queue
from jobqueue_operator.scaling import decide as scaling
from jobqueue_operator.scaling.decide import Seen


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
    assert podmetrics.busy_slots(text) == 3
    assert podmetrics.busy_slots("") == 0


def test_the_autoscaler_status_has_depths_and_the_total() -> None:
    depths = {"q": status.QueueDepth(4, 2, 12.7, dead_letters=3, last_scale_time="2030-01-01T00:00:00Z")}
    written = status.autoscaler(depths, [], {}, [], 1, "2030-01-01T00:00:05Z").to_body()
    assert written["backlog"] == 6
    assert written["queues"] == [
        {
            "name": "q",
            "ready": 4,
            "inFlight": 2,
            "oldestTaskAgeSeconds": 12,
            "deadLetters": 3,
            "lastScaleTime": "2030-01-01T00:00:00Z",
        }
    ]
    assert "conditions" not in written  # no autoscaled queue: no ScalingActive condition
    assert "workers" not in written  # the reconciler's field


def test_an_unreadable_broker_leaves_the_depths_out() -> None:
    """Left out of the autoscaler's apply, a field it wrote before is removed: unknown is shown as blank."""
    written = status.autoscaler({"q": status.QueueDepth(None, None)}, [], {}, [], 1, "2030-01-01T00:00:00Z")
    body = written.to_body()
    assert "backlog" not in body
    assert body["queues"] == [{"name": "q"}]


def test_the_total_is_blank_unless_every_queue_was_read() -> None:
    depths = {"a": status.QueueDepth(1, 0), "b": status.QueueDepth(None, None)}
    assert status.autoscaler(depths, [], {}, [], 1, "2030-01-01T00:00:00Z").backlog is None


def _jobqueue(window: int = 300) -> JobQueue:
    autoscaling_block = {"minReplicas": 0, "maxReplicas": 5, "scaleDownStabilizationSeconds": window}
    return JobQueue.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "generation": 1},
            "spec": {"image": "i", "app": "a", "queues": [{"name": "q", "autoscaling": autoscaling_block}]},
        }
    )


def _deployment(replicas: int) -> dict[str, Any]:
    return {"metadata": {"name": "m-q-worker"}, "spec": {"replicas": replicas}, "status": {"replicas": replicas}}


def test_a_restarted_operator_remembers_the_last_scale_time_from_the_status() -> None:
    body = {"status": {"queues": [{"name": "q", "lastScaleTime": "2030-01-01T00:00:00Z"}]}}
    seen = Seen(_jobqueue(), 1e9, {"q": broker.QueueCounts(0, 0)}, None, {"q": _deployment(0)})
    plan = scaling.plan(seen, {}, body)
    assert plan.memory["q"].last_scale_time == "2030-01-01T00:00:00Z"


def test_the_scale_down_window_is_kept_in_the_status_and_survives_a_restart() -> None:
    """Busy at 4 replicas, then idle: a restarted operator holds the 4 for the rest of the window, as the
    running one would have, instead of scaling straight down."""
    jq = _jobqueue(window=300)
    t0 = scaling.epoch("2030-01-01T00:00:00Z")
    busy = Seen(jq, t0, {"q": broker.QueueCounts(4, 0)}, None, {"q": _deployment(4)})
    plan = scaling.plan(busy, {}, {})
    assert plan.depths["q"].hold == [("2030-01-01T00:05:00Z", 4)]
    status_entry = {"name": "q", "scaleDownHold": [{"until": "2030-01-01T00:05:00Z", "replicas": 4}]}

    quiet = Seen(jq, t0 + 60, {"q": broker.QueueCounts(0, 1)}, None, {"q": _deployment(4)})
    restarted = scaling.plan(quiet, {}, {"status": {"queues": [status_entry]}})
    assert restarted.scales == []  # holding 4 within the window
    forgetful = scaling.plan(quiet, {}, {})
    assert [s.decision.replicas for s in forgetful.scales] == [1]  # what the lost window would have done


def test_hold_steps_keep_only_what_can_still_be_the_highest() -> None:
    history = autoscaling.History(recommendations=((0.0, 5), (10.0, 7), (20.0, 3), (40.0, 2)))
    # 7 until 70 s (rounded up to 90 s) hides 3 (until 80 s, also 90 s); 5 is older and lower than 7.
    assert scaling.hold_steps(history, 60.0) == [("1970-01-01T00:01:30Z", 7), ("1970-01-01T00:02:00Z", 2)]


def test_a_broken_status_entry_seeds_an_empty_memory() -> None:
    queue = _jobqueue().spec.queues[0]
    memory = scaling.seeded(queue, {"name": "q", "scaleDownHold": [{"until": "yesterday", "replicas": 2}]})
    assert memory.history == autoscaling.History()


@pytest.mark.parametrize(
    ("before", "now", "said"),
    [
        (None, 0, None),  # the first look at an empty list
        (None, 2, "tasks were dead-lettered (2 in its list)"),  # dead-lettered before the first tick
        (2, 2, None),
        (2, 5, "3 more tasks dead-lettered (5 in its list)"),
        (5, 1, None),  # purged
        (3, None, None),  # not read this tick
    ],
)
def test_a_dead_letter_is_announced_once_even_before_the_first_tick(
    before: int | None, now: int | None, said: str | None
) -> None:
    events = scaling._dead_letter_events(_jobqueue(), "q", before, now)
    assert [e.message.split(": ", 1)[1].split(";")[0] for e in events] == ([said] if said else [])
    assert all(e.reason == "DeadLetters" and e.type == "Warning" for e in events)


def test_a_dead_letter_event_names_a_command_that_works_at_zero_workers() -> None:
    """`kubectl exec` into a worker needs a worker; the plugin reads the broker from outside."""
    jq = _jobqueue()
    (event,) = scaling._dead_letter_events(jq, "q", None, 2)
    assert f"`kubectl jobqueue deadletters {jq.name} q -n {jq.namespace}`" in event.message
    assert "kubectl exec" not in event.message


@pytest.mark.parametrize(
    ("unserved", "adds", "refuses"),
    [
        ({"high_priority": 3}, "add a queue of that name", []),
        ({"celery": 2, "video.transcode": 1}, "add a queue of that name", []),
        ({"has space": 2}, None, ["has space cannot be a queue of a JobQueue (a queue name is printable ASCII"]),
        ({"unacked_mutex": 1, "ok": 1}, "add a queue named ok;", ["unacked_mutex cannot be a queue of a JobQueue"]),
        ({"x" * 201: 1}, None, ["cannot be a queue of a JobQueue (a queue name has 1 to 200 characters)"]),
    ],
)
def test_the_unserved_advice_adds_only_names_the_schema_accepts(
    unserved: dict[str, int], adds: str | None, refuses: list[str]
) -> None:
    seen = Seen(_jobqueue(), 0.0, unserved=unserved)
    verdict = scaling._served_condition(seen, scaling._unserved(seen))
    assert verdict is not None
    state, reason, message = verdict
    assert (state, reason) == ("False", "UnservedQueues")
    assert ("add a queue" in message) == (adds is not None)
    if adds is not None:
        assert adds in message
    for words in refuses:
        assert words in message
    assert "jobqueue-worker queue purge --queue NAME --yes" in message


def test_worker_pods_map_to_their_real_queue_name() -> None:
    jq = JobQueue.from_body(
        {
            "metadata": {"name": "m", "namespace": "ns", "generation": 1},
            "spec": {"image": "i", "app": "a", "queues": [{"name": "Q"}, {"name": "q"}]},
        }
    )
    pods = {
        name: {"metadata": {"name": name, "labels": naming.labels(jq, naming.WORKER, queue), "annotations": notes}}
        for name, queue, notes in (
            ("upper", "Q", naming.queue_annotations("Q")),
            ("lower", "q", naming.queue_annotations("q")),
        )
    }
    seen = Seen(jq, 0.0, worker_pods=pods)
    assert [p["metadata"]["name"] for p in scaling._pods_of(seen, "Q")] == ["upper"]
    assert [p["metadata"]["name"] for p in scaling._pods_of(seen, "q")] == ["lower"]
