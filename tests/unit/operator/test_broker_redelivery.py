"""broker.py's prompt redelivery, pure half: reading registrations, routing a held message back the way
kombu's restore would, and the arguments of the one Lua script that moves them."""

from __future__ import annotations

import json
from typing import Any

import pytest

from jobqueue_operator import broker
from jobqueue_worker import contract, restore
from jobqueue_worker.restore import Binding, Redelivery, RestoreOutcome

REGISTRATION = contract.Registration(
    instance="i1",
    queue="high",
    pod="w-1",
    pod_uid="u-1",
    namespace="apps",
    started_at=10.0,
    priority_steps=(0, 3, 6, 9),
)


def _entry(priority: Any = 0, exchange: str = "", routing_key: str = "high", task_id: str = "t-1") -> str:
    message = {
        "body": "W1tdLCB7fSwge31d",
        "content-type": "application/json",
        "headers": {"id": task_id, "task": "tasks.add", "timelimit": [None, None]},
        "properties": {"priority": priority, "delivery_info": {"exchange": exchange, "routing_key": routing_key}},
    }
    return json.dumps([message, exchange, routing_key])


def test_registrations_round_trip_and_unreadable_ones_are_left_out() -> None:
    later = contract.Registration("i2", "low", "w-2", "u-2", "apps", 20.0)
    reply = {b"i2": later.to_json().encode(), b"i1": REGISTRATION.to_json(), b"bad": b"{not json", b"old": b"{}"}
    assert broker.parse_registry(reply) == [REGISTRATION, later]
    assert broker.registry_commands("p:") == [("HGETALL", "p:jobqueue:workers")]


def test_liveness_is_one_exists_one_hlen_and_one_get_of_the_result_backend_report_per_incarnation() -> None:
    later = contract.Registration("i2", "low", "w-2", "u-2", "apps", 20.0)
    assert broker.liveness_commands([REGISTRATION, later], "p:") == [
        ("EXISTS", "p:jobqueue:worker:i1:alive"),
        ("HLEN", "p:jobqueue:worker:i1:held"),
        ("GET", "p:jobqueue:worker:i1:result-backend"),
        ("EXISTS", "p:jobqueue:worker:i2:alive"),
        ("HLEN", "p:jobqueue:worker:i2:held"),
        ("GET", "p:jobqueue:worker:i2:result-backend"),
    ]
    assert broker.parse_liveness([REGISTRATION, later], [1, 3, b"the result backend ...", 0, 0, None]) == [
        broker.Incarnation(REGISTRATION, True, 3, "the result backend ..."),
        broker.Incarnation(later, False, 0),
    ]


@pytest.mark.parametrize(
    ("priority", "step"), [(0, 0), (2, 0), (3, 3), (5, 3), (9, 9), (12, 9), (-1, 0), ("x", 0), (None, 0), (True, 0)]
)
def test_a_message_goes_back_to_the_list_of_its_priority_step(priority: Any, step: int) -> None:
    planned = restore.redelivery("tag", _entry(priority), REGISTRATION, {}, "p:")
    assert planned is not None
    assert planned.lists == ((f"p:high\x06\x16{step}" if step else "p:high"),)


def test_a_message_goes_back_marked_redelivered_and_otherwise_unchanged() -> None:
    planned = restore.redelivery("tag", _entry(), REGISTRATION, {})
    assert planned is not None
    original = json.loads(_entry())[0]
    restored = json.loads(planned.payload)
    assert restored["headers"].pop("redelivered") is True
    assert restored["properties"]["delivery_info"].pop("redelivered") is True
    assert restored == original
    assert (planned.tag, planned.task_id, planned.queues) == ("tag", "t-1", ("high",))


def test_routing_follows_kombus_binding_tables() -> None:
    tables = {
        "media": [Binding("high", "", "high"), Binding("high", "", "audit"), Binding("low", "", "low")],
        "events": [Binding("img.*", r"^img\.[^\.]+$", "images")],
    }
    assert restore.lookup("media", "high", tables["media"], "fallback") == ["audit", "high"]
    assert restore.lookup("events", "img.png", tables["events"], "fallback") == ["images"]
    assert restore.lookup("", "direct-q", [], "fallback") == ["direct-q"]
    # where kombu would find no queue and drop the message, it goes back to the worker's own queue
    assert restore.lookup("media", "nobody", tables["media"], "fallback") == ["fallback"]
    assert restore.lookup("gone", "high", [], "fallback") == ["fallback"]
    planned = restore.redelivery("tag", _entry(exchange="media"), REGISTRATION, tables)
    assert planned is not None
    assert planned.queues == ("audit", "high")


def test_binding_members_split_like_kombus() -> None:
    members = [b"high\x06\x16\x06\x16high", b"img.*\x06\x16^img$\x06\x16images", b"broken"]
    assert restore.parse_bindings(members) == [Binding("high", "", "high"), Binding("img.*", "^img$", "images")]


@pytest.mark.parametrize(
    "entry", ["not json", json.dumps({"a": 1}), json.dumps(["m", "", "q"]), json.dumps([{}, 1, 2])]
)
def test_an_entry_that_does_not_decode_is_not_planned(entry: str) -> None:
    assert restore.redelivery("tag", entry, REGISTRATION, {}) is None


def test_a_message_without_headers_goes_back_unmarked() -> None:
    message = {"body": "x", "properties": {"priority": 3}}
    planned = restore.redelivery("tag", json.dumps([message, "", "high"]), REGISTRATION, {})
    assert planned is not None
    assert json.loads(planned.payload) == message
    assert planned.task_id == ""
    message["properties"]["correlation_id"] = "c-1"
    planned = restore.redelivery("tag", json.dumps([message, "", "high"]), REGISTRATION, {})
    assert planned is not None
    assert planned.task_id == "c-1"


def test_script_arguments_list_each_key_once() -> None:
    first = Redelivery("a", "{1}", "t-1", ("high", "audit"), ("p:high", "p:audit"))
    second = Redelivery("b", "{2}", "", ("high",), ("p:high\x06\x169",))
    keys, args = restore.restore_arguments("i1", [first, second], "p:")
    assert keys == [
        "p:unacked",
        "p:unacked_index",
        "p:jobqueue:worker:i1:held",
        "p:jobqueue:workers",
        "p:jobqueue:worker:i1:alive",
        "p:high",
        "p:jobqueue:losses:high",
        "p:audit",
        "p:jobqueue:losses:audit",
        "p:high\x06\x169",
    ]
    ttl = contract.LOSSES_TTL_SECONDS
    assert args == ["i1", ttl, 2, "a", "{1}", "t-1", 2, 6, 7, "high", 8, 9, "audit", "b", "{2}", "", 1, 10, 7, "high"]


def test_script_replies() -> None:
    assert restore.parse_restore([b"alive"]) == restore.Restore(RestoreOutcome.ALIVE)
    assert restore.parse_restore([b"changed"]) is None
    restored = restore.parse_restore([b"restored", b"high", 3, b"audit", 1], left=2)
    assert restored == restore.Restore(RestoreOutcome.RESTORED, {"high": 3, "audit": 1}, 2)
    assert restored is not None
    assert restored.total == 4
    with pytest.raises(restore.RestoreError, match="unexpected reply"):
        restore.parse_restore([b"what"])


@pytest.mark.parametrize(
    ("key", "queue"),
    [
        ("p:celery", "celery"),
        ("p:hgih\x06\x169", "hgih"),
        ("p:a.b-c", "a.b-c"),
        ("q:celery", None),  # another prefix
        ("p:unacked", None),
        ("p:jobqueue:deadletter:high", None),
        ("p:_kombu.binding.celery", None),
        ("p:3f1c.reply.celery.pidbox", None),
        ("p:", None),
    ],
)
def test_which_list_keys_are_task_queues(key: str, queue: str | None) -> None:
    assert broker.queue_of_list(key, "p:") == queue


def test_candidates_group_priority_lists_and_leave_out_known_queues() -> None:
    keys = {"p:high", "p:high\x06\x163", "p:celery", "p:hgih\x06\x169", "p:hgih", "p:unacked"}
    lists = broker.candidate_lists(keys, {"high"}, "p:")
    assert lists == {"celery": ["p:celery"], "hgih": ["p:hgih", "p:hgih\x06\x169"]}
    assert broker.tail_commands(lists) == [
        ("LLEN", "p:celery"),
        ("LINDEX", "p:celery", "-1"),
        ("LLEN", "p:hgih"),
        ("LINDEX", "p:hgih", "-1"),
        ("LLEN", "p:hgih\x06\x169"),
        ("LINDEX", "p:hgih\x06\x169", "-1"),
    ]


def test_only_lists_holding_celery_tasks_count_and_priority_lists_are_summed() -> None:
    task = json.loads(_entry())[0]
    lists = {"celery": ["p:celery"], "hgih": ["p:hgih", "p:hgih\x06\x169"], "mine": ["p:mine"], "empty": ["p:empty"]}
    replies = [4, json.dumps(task), 0, None, 3, json.dumps(task), 7, b"plain string", 0, None]
    assert broker.parse_tails(lists, replies) == {"celery": 4, "hgih": 3}
    assert not broker.is_task_message(json.dumps({"headers": {}, "body": "x"}))


def test_purge_is_kombus_llen_and_del_of_each_priority_list() -> None:
    assert broker.purge_commands(broker.QueueKeys("old", (0, 9)), "p:") == [
        ("LLEN", "p:old"),
        ("DEL", "p:old"),
        ("LLEN", "p:old\x06\x169"),
        ("DEL", "p:old\x06\x169"),
    ]
