"""broker_restart.decide: a managed Redis restarts onto a changed template only when that loses no task."""

from __future__ import annotations

from typing import Any

from jobqueue_operator import broker_restart, naming
from jobqueue_operator.broker_state import Held
from jobqueue_operator.reasons import Reason

EMPTY = Held(waiting=0, in_flight=0, dead_letters=0)
SIX = Held(waiting=6, in_flight=0, dead_letters=0)


def _container(memory: str, image: str = "redis:7.4") -> dict[str, Any]:
    return {"name": "redis", "image": image, "args": ["--port", "6379"], "resources": {"limits": {"memory": memory}}}


def _statefulset(memory: str = "128Mi", generation: int = 2, observed: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": "m-redis", "generation": generation},
        "spec": {"template": {"spec": {"containers": [_container(memory)]}}},
        "status": {"observedGeneration": observed, "currentRevision": "m-redis-old", "updateRevision": "m-redis-new"},
    }


def _pod(revision: str = "m-redis-old", memory: str = "64Mi", running: bool = True) -> dict[str, Any]:
    state = {"running": {}} if running else {"waiting": {"reason": "CrashLoopBackOff"}}
    return {
        "metadata": {"name": "m-redis-0", "labels": {broker_restart.REVISION_LABEL: revision}},
        "spec": {"containers": [_container(memory)]},
        "status": {"containerStatuses": [{"name": "redis", "state": state}]},
    }


def _decide(**given: Any) -> broker_restart.Verdict:
    arguments: dict[str, Any] = {
        "jobqueue": "m",
        "statefulset": _statefulset(),
        "pod": _pod(),
        "held": SIX,
        "aof": False,
        "unreadable": None,
        "asked": False,
    }
    return broker_restart.decide(**{**arguments, **given})


def test_a_pod_on_the_current_revision_is_up_to_date() -> None:
    verdict = _decide(pod=_pod(revision="m-redis-new"))
    assert verdict.up_to_date
    assert not verdict.restart
    assert verdict.reason == Reason.BROKER_POD_CURRENT


def test_nothing_is_decided_before_the_statefulset_controller_saw_the_new_template() -> None:
    verdict = _decide(statefulset=_statefulset(generation=3, observed=2))
    assert verdict.up_to_date
    assert not verdict.restart


def test_a_change_is_held_while_redis_holds_tasks_and_the_status_says_how_many_what_and_how() -> None:
    verdict = _decide(held=Held(waiting=6, in_flight=1, dead_letters=2))
    assert not verdict.restart
    assert not verdict.up_to_date
    assert verdict.reason == Reason.BROKER_RESTART_HELD
    assert "memory limit 64Mi -> 128Mi" in verdict.message
    assert "would lose 9 tasks (6 waiting, 1 in flight, 2 dead letters)" in verdict.message
    assert f"kubectl annotate jq m {naming.RESTART_BROKER_ANNOTATION}=true" in verdict.message
    assert "restarts by itself once they are done" in verdict.message


def test_an_empty_redis_restarts_at_once() -> None:
    verdict = _decide(held=EMPTY)
    assert verdict.restart
    assert verdict.reason == Reason.BROKER_RESTARTING
    assert verdict.lost == 0
    assert "it holds no task" in broker_restart.restarted_message(verdict)
    assert "memory limit 64Mi -> 128Mi" in broker_restart.restarted_message(verdict)


def test_an_incomplete_count_never_counts_as_empty() -> None:
    verdict = _decide(held=Held(0, 0, 0, complete=False))
    assert not verdict.restart
    assert verdict.reason == Reason.BROKER_RESTART_HELD


def test_redis_with_its_append_only_file_restarts_at_once() -> None:
    assert _decide(aof=True).restart


def test_the_annotation_restarts_now_and_counts_the_loss() -> None:
    verdict = _decide(asked=True)
    assert verdict.restart
    assert verdict.asked
    assert verdict.lost == 6
    assert "6 tasks" in broker_restart.restarted_message(verdict)


def test_a_crash_looping_redis_restarts_onto_the_new_template() -> None:
    verdict = _decide(pod=_pod(running=False), held=None, unreadable="connection refused")
    assert verdict.restart
    assert verdict.lost == 0


def test_tasks_that_cannot_be_counted_hold_the_restart() -> None:
    verdict = _decide(held=None, unreadable="timed out")
    assert not verdict.restart
    assert verdict.reason == Reason.BROKER_RESTART_HELD
    assert "cannot be counted (timed out)" in verdict.message


def test_the_changes_are_named() -> None:
    pod = _pod()
    template = {"spec": {"containers": [{**_container("64Mi", "redis:7.2"), "args": ["--port", "6380"]}]}}
    assert broker_restart.changes(pod, template) == (
        "image redis:7.4 -> redis:7.2",
        "redis-server's settings (arguments, environment or probes)",
    )
    assert broker_restart.changes(pod, {"spec": {"containers": [_container("64Mi")]}}) == ("the Pod template",)


def _member(n: int, revision: str, ready: bool = True, deleting: bool = False) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": f"m-redis-{n}", "labels": {broker_restart.REVISION_LABEL: revision}}
    if deleting:
        metadata["deletionTimestamp"] = "2026-12-07T16:00:00Z"
    return {
        "metadata": metadata,
        "spec": {"containers": [_container("64Mi")]},
        "status": {
            "containerStatuses": [{"name": "redis", "state": {"running": {}}}],
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def _roll(
    members: list[dict[str, Any]], master: str | None = "m-redis-0.m-redis.ns.svc:6379", in_sync: int = 2
) -> broker_restart.Verdict:
    return broker_restart.roll_members("m", _statefulset(), members, master, in_sync, "no Sentinel answers")


def test_a_highly_available_broker_rolls_one_stale_replica_while_it_is_whole() -> None:
    verdict = _roll([_member(0, "m-redis-old"), _member(1, "m-redis-new"), _member(2, "m-redis-old")])
    assert (verdict.restart, verdict.pod, verdict.reason) == (True, "m-redis-2", Reason.BROKER_RESTARTING)
    assert "m-redis-2 is a replica" in broker_restart.restarted_message(verdict)


def test_no_member_restarts_while_one_is_not_ready_is_being_deleted_or_a_replica_is_out_of_sync() -> None:
    for members, in_sync in (
        ([_member(0, "m-redis-old"), _member(1, "m-redis-new", ready=False), _member(2, "m-redis-old")], 2),
        ([_member(0, "m-redis-old"), _member(1, "m-redis-old", deleting=True), _member(2, "m-redis-old")], 2),
        ([_member(0, "m-redis-old"), _member(2, "m-redis-old")], 2),  # one member missing
        ([_member(0, "m-redis-old"), _member(1, "m-redis-new"), _member(2, "m-redis-old")], 1),
    ):
        verdict = _roll(members, in_sync=in_sync)
        assert not verdict.restart
        assert verdict.reason == Reason.BROKER_RESTARTING
        assert "one member at a time" in verdict.message


def test_the_master_is_never_deleted_and_without_a_working_master_nothing_restarts() -> None:
    only_master = [_member(0, "m-redis-old"), _member(1, "m-redis-new"), _member(2, "m-redis-new")]
    verdict = _roll(only_master)
    assert not verdict.restart
    assert verdict.reason == Reason.BROKER_RESTART_HELD
    assert "m-redis-0 is the master" in verdict.message
    assert "SENTINEL FAILOVER jobqueue" in verdict.message
    blind = _roll([_member(0, "m-redis-old"), _member(1, "m-redis-new"), _member(2, "m-redis-old")], master=None)
    assert not blind.restart
    assert "no Sentinel answers" in blind.message
    current = _roll([_member(n, "m-redis-new") for n in range(3)])
    assert current.up_to_date
