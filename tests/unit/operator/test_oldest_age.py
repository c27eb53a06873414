"""The oldest waiting task's age without the producer's help (oldest.py, rates.oldest_wait_at_least), read
from the ends of the lists (broker.tail), carried to the status, the metrics and the autoscaler's plan."""

from __future__ import annotations

import json

from prometheus_client import generate_latest

from jobqueue_operator import broker, oldest, rates, status
from jobqueue_operator.metrics import OperatorMetrics, QueueSeries
from jobqueue_operator.oldest import Tail
from jobqueue_operator.scaling import decide


def _raw(tag: str, task_id: str = "t", sent_at: float | None = None) -> bytes:
    headers: dict[str, object] = {"id": task_id, "task": "shop.invoice"}
    if sent_at is not None:
        headers["jobqueue_sent_at"] = sent_at
    return json.dumps({"body": "", "headers": headers, "properties": {"delivery_tag": tag}}).encode()


def test_a_tail_is_named_by_its_delivery_tag_else_its_task_id_and_carries_its_stamp() -> None:
    assert broker.tail(_raw("tag-1", sent_at=12.5)) == Tail("tag-1", 12.5)
    no_tag = json.dumps({"headers": {"id": "task-9"}, "properties": {}}).encode()
    assert broker.tail(no_tag) == Tail("task-9", None)
    assert broker.tail(b"{not json") == Tail("", None)
    assert broker.tail(None) is None


def test_parse_keeps_the_tail_of_every_non_empty_priority_list() -> None:
    keys = [broker.QueueKeys("q", (0, 9))]
    replies = [2, 1, _raw("old"), _raw("low", sent_at=5.0), [None, None, None], 0, []]
    assert broker.parse(keys, replies)["q"].tails == (Tail("old"), Tail("low", 5.0))
    empty = [0, 0, None, None, [None, None, None], 0, []]
    assert broker.parse(keys, empty)["q"].tails == ()


def test_first_sight_is_kept_while_the_message_stays_at_the_end_and_forgotten_after() -> None:
    seen = oldest.remember({}, [Tail("a"), Tail("")], 100.0)
    assert seen == {"a": 100.0}
    seen = oldest.remember(seen, [Tail("a"), Tail("b")], 130.0)
    assert seen == {"a": 100.0, "b": 130.0}
    assert oldest.oldest([Tail("a"), Tail("b")], seen, 160.0) == (60.0, "first-seen")
    assert oldest.remember(seen, [Tail("b")], 165.0) == {"b": 130.0}


def test_a_stamp_dates_its_tail_and_the_oldest_end_wins_whatever_its_source() -> None:
    seen = {"a": 100.0}
    assert oldest.oldest([Tail("a"), Tail("s", 150.0)], seen, 160.0) == (60.0, "first-seen")
    assert oldest.oldest([Tail("a"), Tail("s", 50.0)], seen, 160.0) == (110.0, "sent-time")
    assert oldest.oldest([Tail("never-seen")], seen, 160.0) is None
    assert oldest.oldest([], seen, 160.0) is None


def test_unstamped_the_larger_lower_bound_is_the_age_and_first_sight_wins_a_tie() -> None:
    assert oldest.measured((60.0, "first-seen"), 20.0) == (60.0, "first-seen")
    assert oldest.measured((5.0, "first-seen"), 40.0) == (40.0, "arrivals")  # a draining backlog
    assert oldest.measured((40.0, "first-seen"), 40.0) == (40.0, "first-seen")
    assert oldest.measured(None, 40.0) == (40.0, "arrivals")
    assert oldest.measured((7.0, "sent-time"), 400.0) == (7.0, "sent-time")  # the stamp is exact
    assert oldest.measured(None, None) is None


def _window(*points: tuple[float, int, int]) -> rates.Window:
    """(at, waiting, completed) samples."""
    window = rates.Window()
    for at, backlog, completed in points:
        window = rates.add(window, rates.Sample(at, backlog, completed, 0.0, 0.0))
    return window


def test_the_arrivals_lower_bound_is_a_tick_under_the_upper_one_for_a_fifo_list() -> None:
    standing = _window((0, 0, 0), (5, 4, 0), (10, 4, 0), (15, 4, 0))  # 4 arrived between 0 and 5, none taken
    assert rates.oldest_wait(standing, 4) == 15.0
    assert rates.oldest_wait_at_least(standing, 4) == 10.0
    draining = _window((0, 10, 0), (5, 8, 2), (10, 6, 4), (15, 4, 6))  # 10 at 0, two finished per tick
    assert rates.oldest_wait_at_least(draining, 4) == 15.0  # the window's span: "at least this long"
    assert rates.oldest_wait_at_least(draining, 0) is None
    assert rates.oldest_wait_at_least(rates.Window(), 3) is None


def test_the_autoscaler_plans_with_the_stamp_else_the_upper_bound_when_it_is_larger() -> None:
    assert decide.planning_age((7.0, "sent-time"), 400.0) == 7.0
    assert decide.planning_age((60.0, "first-seen"), 20.0) == 60.0
    assert decide.planning_age((10.0, "arrivals"), 15.0) == 15.0
    assert decide.planning_age(None, None) is None


def test_the_status_and_the_metrics_say_where_the_age_came_from() -> None:
    depth = status.QueueDepth(3, 0, 42.9, oldest_age_source="first-seen")
    [entry] = status.autoscaler({"q": depth}, [], {}, [], 1, "2030-01-01T00:00:00Z").queues or []
    assert (entry.oldest_task_age_seconds, entry.oldest_task_age_source) == (42, "first-seen")
    assert entry.model_dump(by_alias=True, exclude_none=True)["oldestTaskAgeSource"] == "first-seen"

    metrics = OperatorMetrics()
    series = QueueSeries(3, 0, 42.9, 0, 0, 0, oldest_age_source="first-seen")
    metrics.set_queues("ns", "jq", {"q": series, "idle": QueueSeries(0, 0, None, 0, 0, 0)}, broker_up=True)
    text = generate_latest(metrics.registry).decode()
    labels = 'jobqueue="jq",namespace="ns",queue="q"'
    assert f"jobqueue_queue_oldest_task_age_seconds{{{labels}}} 42.9" in text
    assert f'jobqueue_queue_oldest_task_age_source{{{labels},source="first-seen"}} 1.0' in text
    assert f'jobqueue_queue_oldest_task_age_source{{{labels},source="sent-time"}} 0.0' in text
    assert f'jobqueue_queue_oldest_task_age_source{{{labels},source="arrivals"}} 0.0' in text
    idle = [
        line
        for line in text.splitlines()
        if line.startswith("jobqueue_queue_oldest_task_age_source{") and '"idle"' in line
    ]
    assert sorted(float(line.split()[-1]) for line in idle) == [0.0, 0.0, 0.0]  # nothing waits: no source
