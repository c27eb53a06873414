"""broker.py's pure half: the pipeline it sends and how the replies become QueueCounts."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobqueue_operator import broker
from jobqueue_operator.broker import QueueCounts, QueueKeys
from jobqueue_worker import contract


def _message(sent_at: float | None = None, routing_key: str = "q") -> bytes:
    headers: dict[str, Any] = {"task": "t", "id": "1"}
    if sent_at is not None:
        headers[contract.SENT_AT_HEADER] = sent_at
    properties = {"delivery_info": {"exchange": "", "routing_key": routing_key}, "priority": 0}
    return json.dumps({"body": "", "headers": headers, "properties": properties}).encode()


def _unacked(routing_key: str) -> bytes:
    return json.dumps([json.loads(_message(1.0, routing_key)), "", routing_key]).encode()


def test_priority_lists_follow_kombu_naming_with_the_prefix() -> None:
    assert QueueKeys("high").lists() == ["high", "high\x06\x163", "high\x06\x166", "high\x06\x169"]
    assert QueueKeys("q", (0, 9)).lists("p:") == ["p:q", "p:q\x06\x169"]


def test_one_pipeline_reads_every_queue_then_the_unacked_hash_once() -> None:
    sent = broker.commands([QueueKeys("a", (0, 9)), QueueKeys("b", (0,))], "p:")
    assert sent == [
        ("LLEN", "p:a"),
        ("LLEN", "p:a\x06\x169"),
        ("LINDEX", "p:a", "-1"),
        ("LINDEX", "p:a\x06\x169", "-1"),
        ("HMGET", "p:jobqueue:stats:a", "completed", "run_seconds", "run_seconds_sq"),
        ("LLEN", "p:jobqueue:deadletter:a"),
        ("LLEN", "p:b"),
        ("LINDEX", "p:b", "-1"),
        ("HMGET", "p:jobqueue:stats:b", "completed", "run_seconds", "run_seconds_sq"),
        ("LLEN", "p:jobqueue:deadletter:b"),
        ("HVALS", "p:unacked"),
    ]


def test_replies_become_counts_per_queue() -> None:
    queues = [QueueKeys("a", (0, 9)), QueueKeys("b", (0,))]
    replies = [
        3,
        2,
        _message(200.0, "a"),
        _message(100.0, "a"),
        [b"7", b"3.5", b"2.25"],
        4,
        0,
        None,
        [None, None, None],
        0,
        [_unacked("a"), _unacked("a"), _unacked("b"), _unacked("other-jobqueues-queue"), b"not json"],
    ]
    counts = broker.parse(queues, replies)
    assert counts == {
        "a": QueueCounts(
            ready=5,
            in_flight=2,
            oldest_sent_at=100.0,
            completed=7,
            run_seconds=3.5,
            run_seconds_sq=2.25,
            dead_letters=4,
        ),
        "b": QueueCounts(ready=0, in_flight=1),
    }


def test_a_waiting_task_without_a_send_time_gives_no_age() -> None:
    counts = broker.parse([QueueKeys("a", (0,))], [1, _message(None, "a"), [None, None, None], None, []])
    assert counts["a"].oldest_sent_at is None
    assert counts["a"].ready == 1


@pytest.mark.parametrize("raw", [b"garbage", b"[1, 2]", b'{"headers": {"jobqueue_sent_at": "soon"}}', None])
def test_unreadable_messages_are_ignored(raw: bytes | None) -> None:
    assert broker.sent_at(raw) is None


def test_a_short_reply_list_is_an_error_not_a_wrong_count() -> None:
    with pytest.raises(broker.BrokerError, match="expected 5 replies"):
        broker.parse([QueueKeys("a", (0,))], [1, None, []])


def test_a_malformed_sentinel_url_is_refused_before_any_connection() -> None:
    """sentinel:// brokers are measured through their Sentinels (tests/integration/operator/test_sentinel_client.py)."""
    with pytest.raises(broker.BrokerError, match="must be sentinel://"):
        broker.read_counts("sentinel://10.0.0.1:26379;redis://10.0.0.2:6379", [QueueKeys("a")])
