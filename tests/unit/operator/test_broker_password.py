"""broker_password.decide and the managed broker's part of the plan: a password rotation in steps, none of
which drops a task, each decided from what is observed."""

from __future__ import annotations

import base64
import hashlib
from dataclasses import replace
from typing import Any

from jobqueue_operator import broker, broker_password, naming, status
from jobqueue_operator.broker_replication import Members, Replica
from jobqueue_operator.broker_state import Held, ManagedState
from jobqueue_operator.build import redis
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason
from jobqueue_operator.reconcile import decide_broker

OLD, NEW = broker_password.digest("old"), broker_password.digest("new")
URL_NEW = "redis://:new@m-redis.ns.svc:6379/0"


def _decide(**given: Any) -> broker_password.Step:
    arguments: dict[str, Any] = {
        "secret": "m-redis-auth",
        "password": "new",
        "url": URL_NEW,
        "wanted_url": URL_NEW,
        "accepted": frozenset({OLD, NEW}),
        "stale_pods": [],
        "probe_reads_password": False,
    }
    return broker_password.decide(**{**arguments, **given})


def test_the_digest_is_the_one_acl_getuser_lists() -> None:
    assert broker_password.digest("new") == hashlib.sha256(b"new").hexdigest()


def test_a_new_password_is_first_added_to_redis_and_nothing_else() -> None:
    step = _decide(url="redis://:old@m-redis.ns.svc:6379/0", accepted=frozenset({OLD}))
    assert step.add == "new"
    assert step.url is None
    assert step.keep_only is None
    assert [e.reason for e in step.events] == [Reason.BROKER_PASSWORD_ROTATING]
    assert step.rotating is not None


def test_once_redis_accepts_it_the_url_is_rewritten_and_the_old_password_kept() -> None:
    step = _decide(url="redis://:old@m-redis.ns.svc:6379/0")
    assert step.url == URL_NEW
    assert step.add is None
    assert step.keep_only is None
    assert step.rotating is not None
    assert "1 older" in step.rotating


def test_the_old_password_stays_while_a_pod_runs_with_the_old_configuration() -> None:
    step = _decide(stale_pods=["m-q-worker-abc"])
    assert not step.writes
    assert step.rotating is not None
    assert "m-q-worker-abc" in step.rotating


def test_the_old_password_stays_while_redis_probes_itself_with_it() -> None:
    step = _decide(probe_reads_password=True)
    assert not step.writes
    assert step.rotating is not None
    assert "until Redis restarts" in step.rotating


def test_the_old_password_is_dropped_once_no_pod_runs_with_it() -> None:
    step = _decide()
    assert step.keep_only == "new"
    assert step.rotating is None
    assert [e.reason for e in step.events] == [Reason.BROKER_PASSWORD_ROTATED]


def test_a_url_edited_by_hand_is_rewritten_from_the_password_key() -> None:
    step = _decide(url="redis://:typo@elsewhere:6379/0", accepted=frozenset({NEW}))
    assert step.url == URL_NEW
    assert step.rotating is None
    assert "source of truth" in step.events[0].message


def test_nothing_to_do_when_redis_accepts_only_the_secrets_password() -> None:
    step = _decide(accepted=frozenset({NEW}))
    assert not step.writes
    assert step.rotating is None
    assert not step.events


JQ = JobQueue.from_body(
    {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {"image": "i", "app": "a:app", "queues": [{"name": "q"}]},
    }
)


def test_a_password_is_percent_encoded_in_the_url() -> None:
    assert redis.url(JQ, "p@ss:w/rd") == "redis://:p%40ss%3Aw%2Frd@m-redis.ns.svc:6379/0"
    assert redis.operator_url(JQ, "x").startswith("redis://jobqueue-operator:x@")


def _pod(name: str, component: str, digest: str | None, queue: str | None = None) -> dict[str, Any]:
    labels = {naming.COMPONENT_LABEL: component, **({naming.QUEUE_LABEL: queue} if queue else {})}
    annotations = {naming.CONFIG_HASH_ANNOTATION: digest} if digest else {}
    return {"metadata": {"name": name, "labels": labels, "annotations": annotations}, "status": {"phase": "Running"}}


def _deployment(component: str, digest: str, queue: str | None = None) -> dict[str, Any]:
    labels = {naming.COMPONENT_LABEL: component, **({naming.QUEUE_LABEL: queue} if queue else {})}
    template = {"metadata": {"labels": labels, "annotations": {naming.CONFIG_HASH_ANNOTATION: digest}}}
    return {"kind": "Deployment", "spec": {"template": template}}


def test_stale_pods_are_those_whose_config_hash_is_not_their_deployments() -> None:
    desired = [_deployment(naming.WORKER, "h2", "q"), _deployment(naming.BEAT, "b2")]
    pods = [
        _pod("w-new", naming.WORKER, "h2", "q"),
        _pod("w-old", naming.WORKER, "h1", "q"),
        _pod("beat", naming.BEAT, "b2"),
        _pod("gone-queue", naming.WORKER, "h2", "removed"),
        _pod("m-redis-0", naming.BROKER, None),
    ]
    assert decide_broker.stale_pods(pods, desired) == ["w-old", "gone-queue"]


def _managed(**given: Any) -> decide_broker.ManagedBroker:
    state = ManagedState(as_operator=True, accepted=frozenset({OLD, NEW}), held=Held(0, 0, 0), aof=False)
    fields: dict[str, Any] = {"operator_password": "op", "password": "new", "url": "redis://:old@x:6379/0"}
    return decide_broker.ManagedBroker(**{**fields, "state": state, **given})


def test_the_pods_read_the_rewritten_url_in_the_same_reconcile_once_redis_accepts_the_password() -> None:
    key = ("Secret", naming.redis_secret("m"))
    config = {key: {naming.PASSWORD_KEY: "bmV3", naming.URL_KEY: "b2xk"}}
    rewritten = decide_broker.pod_config(JQ, _managed(), config)
    assert (rewritten[key] or {})[naming.URL_KEY] == base64.b64encode(redis.url(JQ, "new").encode()).decode()
    not_yet = _managed(state=ManagedState(True, frozenset({OLD}), Held(0, 0, 0), False))
    assert decide_broker.pod_config(JQ, not_yet, config) is config


def test_the_broker_is_not_ready_when_the_operator_cannot_log_in() -> None:
    ready = status.BrokerState(True, Reason.REDIS_READY, "StatefulSet m-redis is ready")
    refused = decide_broker.broker_state(JQ, _managed(state=None, error="WRONGPASS", auth_failed=True), ready)
    assert (refused.ready, refused.reason) == (False, Reason.BROKER_AUTH_FAILED)
    assert "m-redis-auth" in refused.message
    down = decide_broker.broker_state(JQ, _managed(state=None, error="Connection refused"), ready)
    assert (down.ready, down.reason) == (False, Reason.BROKER_UNREACHABLE)
    assert decide_broker.broker_state(JQ, _managed(), ready) is ready


def test_a_redis_without_the_operators_user_gets_it_and_keeps_its_password_while_it_probes_with_it() -> None:
    legacy_probe = {"exec": {"command": ["sh", "-c", f'redis-cli -a "${redis.PASSWORD_ENV}" ping']}}
    pod = {
        "metadata": {"name": "m-redis-0", "labels": {naming.COMPONENT_LABEL: naming.BROKER}},
        "spec": {"containers": [{"name": "redis", "readinessProbe": legacy_probe}]},
        "status": {"containerStatuses": [{"state": {"running": {}}}]},
    }
    state = ManagedState(as_operator=False, accepted=frozenset({OLD, NEW}), held=Held(0, 0, 0), aof=False)
    managed = _managed(state=state, url=redis.url(JQ, "new"), admin_url="redis://:new@x:6379/0")
    planned = decide_broker.plan(JQ, managed, {}, [pod], [], asked=False)
    assert planned.ensure_operator_user == "op"
    assert planned.password.keep_only is None
    assert planned.up_to_date is not None
    assert planned.up_to_date[1] == Reason.BROKER_PASSWORD_ROTATING


def _redis_pod(ready_at: str, started_at: str) -> dict[str, Any]:
    return {
        "status": {
            "conditions": [{"type": "Ready", "status": "False", "lastTransitionTime": ready_at}],
            "containerStatuses": [{"state": {"running": {"startedAt": started_at}}}],
        }
    }


def test_a_redis_that_stopped_answering_after_it_was_ready_is_unreachable_not_starting() -> None:
    frozen = _redis_pod("2030-01-01T00:05:00Z", "2030-01-01T00:00:00Z")
    starting = _redis_pod("2030-01-01T00:00:00Z", "2030-01-01T00:00:01Z")
    assert decide_broker.lost_readiness(frozen)
    assert not decide_broker.lost_readiness(starting)
    not_ready = status.BrokerState(False, Reason.REDIS_STARTING, "StatefulSet m-redis has no ready Pod yet")
    down = _managed(state=None, error="Timeout reading from socket")
    assert decide_broker.broker_state(JQ, down, not_ready, frozen).reason == Reason.BROKER_UNREACHABLE
    assert decide_broker.broker_state(JQ, down, not_ready, starting) is not_ready


HA = JobQueue.from_body(
    {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "queues": [{"name": "q"}],
            "broker": {"managed": {"highAvailability": {"enabled": True}}},
        },
    }
)


def test_the_operator_reads_a_highly_available_broker_through_every_sentinel_as_its_own_user() -> None:
    url = redis.operator_url(HA, "op:pw")
    assert url.split(";") == [
        f"sentinel://jobqueue-operator:op%3Apw@m-sentinel-{n}.m-sentinel-headless.ns.svc:26379/0" for n in range(3)
    ]
    parsed = broker.parse_sentinel(url)
    assert (parsed.username, parsed.password) == ("jobqueue-operator", "op:pw")


def test_on_a_highly_available_broker_the_new_password_is_added_until_every_instance_accepts_it() -> None:
    """`accepted`: what every member and Sentinel accepts; `accepted_somewhere`: what one of them does."""
    step = _decide(accepted=frozenset({OLD}), accepted_somewhere=frozenset({OLD, NEW}))
    assert step.add == "new"


def test_on_a_highly_available_broker_the_old_password_is_dropped_while_any_instance_accepts_it() -> None:
    step = _decide(accepted=frozenset({NEW}), accepted_somewhere=frozenset({OLD, NEW}))
    assert step.keep_only == "new"
    assert not _decide(accepted=frozenset({NEW}), accepted_somewhere=frozenset({NEW})).writes


def test_sentinel_pods_are_rotated_in_place_and_never_wait_for_a_roll() -> None:
    pods = [_pod("m-sentinel-0", naming.SENTINEL, None), _pod("m-redis-1", naming.BROKER, None)]
    assert decide_broker.stale_pods(pods, [_deployment(naming.WORKER, "h2", "q")]) == []


def test_a_highly_available_broker_is_rolled_only_from_a_look_through_the_sentinels() -> None:
    """The plan feeds `broker_restart.roll_members` from the look (`ManagedBroker.members`): without one,
    nothing restarts, whatever the restart annotation says; with a whole broker, a stale replica does."""
    statefulset = {
        "metadata": {"name": "m-redis", "generation": 2},
        "spec": {"template": {"spec": {"containers": [{"name": "redis"}]}}},
        "status": {"observedGeneration": 2, "updateRevision": "m-redis-new"},
    }
    members = [
        {
            "metadata": {"name": f"m-redis-{n}", "labels": {"controller-revision-hash": revision}},
            "status": {
                "containerStatuses": [{"state": {"running": {}}}],
                "conditions": [{"type": "Ready", "status": "True"}],
            },
        }
        for n, revision in enumerate(["m-redis-old", "m-redis-new", "m-redis-old"])
    ]
    state = ManagedState(True, frozenset({NEW}), None, True)
    children = {("StatefulSet", "m-redis"): statefulset}
    unread = _managed(state=state, url=redis.client_url(HA, "new"))
    for asked in (False, True):
        planned = decide_broker.plan(HA, unread, children, members, [], asked)
        assert planned.restart is not None
        assert not planned.restart.restart
        assert "m-redis-0, m-redis-2" in planned.restart.message
    look = Members(
        0.0,
        "jobqueue",
        3,
        answering=3,
        master="m-redis-0.m-redis.ns.svc:6379",
        replicas=(
            Replica("m-redis-1.m-redis.ns.svc:6379", "online", 0),  # the master's INFO words, as read
            Replica("m-redis-2.m-redis.ns.svc:6379", "online", 1),
        ),
    )
    whole = _managed(state=state, url=redis.client_url(HA, "new"), members=look)
    planned = decide_broker.plan(HA, whole, children, members, [], False)
    assert planned.restart is not None
    assert (planned.restart.restart, planned.restart.pod) == (True, "m-redis-2")  # the replica, not the master
    lagging = replace(look, replicas=(look.replicas[0], Replica("m-redis-2.m-redis.ns.svc:6379", "online", 30)))
    held = decide_broker.plan(HA, _managed(state=state, url=whole.url, members=lagging), children, members, [], False)
    assert held.restart is not None
    assert not held.restart.restart
    assert "1 of 2 replicas in sync" in held.restart.message
