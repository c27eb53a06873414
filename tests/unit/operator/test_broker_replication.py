"""A Sentinel-managed broker's members: the sentinel:// URL as the operator reads it, what a look means
(broker_replication.assess: BrokerAvailable and the metric series), the failover between two looks
(broker_replication.follow: the BrokerFailover Event), and the tick that wires them (fake API server,
fake broker reads)."""

from __future__ import annotations

import base64
from typing import Any

import pytest

from jobqueue_operator import (
    broker,
    broker_replication,
    broker_sentinel,
    naming,
    podmetrics,
    reconcile,
    runtime,
    scaling,
    status,
)
from jobqueue_operator.broker_replication import MasterSeen, Members, Replica
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.reasons import Reason
from tests.unit.operator.fake_kube import FakeKube

# -- the URL


def test_a_sentinel_url_lists_every_sentinel_and_the_masters_credentials() -> None:
    parsed = broker.parse_sentinel("sentinel://u:pw@s1:26380/3;sentinel://:pw@s2;sentinel://s3:1")
    assert parsed == broker.SentinelUrl((("s1", 26380), ("s2", 26379), ("s3", 1)), "u", "pw", 3)
    assert broker.parse_sentinel("sentinel://:pw@s1").db == 0


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("sentinel://:pw@s1:26379;redis://:pw@r:6379", "every entry of a sentinel:// broker URL must be sentinel://"),
        ("sentinel://:pw@:26379", "names no host"),
        ("sentinel://s1:port", "invalid port"),
        ("sentinel://s1:26379/zero", "database must be a number"),
    ],
)
def test_a_malformed_sentinel_url_is_one_clear_error_without_its_password(url: str, error: str) -> None:
    with pytest.raises(broker.BrokerError, match=error) as raised:
        broker.parse_sentinel(url)
    assert "pw" not in str(raised.value)


def test_messages_name_the_sentinels_and_the_master_name_never_the_password() -> None:
    where = broker.describe("sentinel://:secret@s1:26379;sentinel://:secret@s2:26379", "jobqueue")
    assert where == "the master 'jobqueue' of the Sentinels s1:26379, s2:26379"
    assert broker.describe("redis://:secret@h:6379/0") == "redis://h:6379"


# -- one look


def _healthy(**changes: Any) -> Members:
    members = Members(
        at=100.0,
        master_name="jobqueue",
        sentinels=3,
        answering=3,
        master="10.0.0.1:6379",
        epoch=0,
        replicas=(
            Replica("10.0.0.2:6379", state="online", lag_seconds=0, offset=1000),
            Replica("10.0.0.3:6379", state="online", lag_seconds=1, offset=900),
        ),
        master_offset=1000,
        good_replicas=2,
        min_replicas_to_write=1,
        max_lag_seconds=10,
    )
    return Members(**{**members.__dict__, **changes})


def test_a_master_with_its_replicas_in_sync_is_available_and_says_master_sync_and_lag() -> None:
    seen = broker_replication.assess(_healthy())
    state, reason, message = seen.verdict
    assert (state, reason) == ("True", Reason.BROKER_REPLICATED)
    assert message.startswith("master 10.0.0.1:6379, 3 of 3 members in sync")
    assert "10.0.0.3:6379 in sync (lag 1 s, 100 bytes behind)" in message
    assert "3 of 3 Sentinels answer" in message
    assert seen.replicas == {"in_sync": 2, "lagging": 0, "syncing": 0, "down": 0}
    assert (seen.lag_seconds, seen.lag_bytes) == (1, 100)


def test_the_master_refusing_writes_for_want_of_replicas_is_said_first() -> None:
    replicas = (Replica("10.0.0.2:6379"), Replica("10.0.0.3:6379", state="online", lag_seconds=30))
    seen = broker_replication.assess(_healthy(replicas=replicas, good_replicas=0))
    state, reason, message = seen.verdict
    assert (state, reason) == ("False", Reason.BROKER_WRITES_REFUSED)
    assert "refuses writes" in message
    assert "1 of 3 members in sync" in message
    assert seen.replicas == {"in_sync": 0, "lagging": 1, "syncing": 0, "down": 1}


def test_fewer_than_two_members_in_sync_is_under_replicated_even_when_writes_are_taken() -> None:
    replicas = (Replica("10.0.0.2:6379"), Replica("10.0.0.3:6379", state="wait_bgsave"))
    seen = broker_replication.assess(_healthy(replicas=replicas, good_replicas=None, min_replicas_to_write=None))
    assert seen.verdict[:2] == ("False", Reason.BROKER_UNDER_REPLICATED)
    assert "losing the master now loses the writes only it holds" in seen.verdict[2]
    assert seen.replicas == {"in_sync": 0, "lagging": 0, "syncing": 1, "down": 1}


def test_one_replica_in_sync_is_enough_members() -> None:
    replicas = (Replica("10.0.0.2:6379", state="online", lag_seconds=0, offset=1000), Replica("10.0.0.3:6379"))
    seen = broker_replication.assess(_healthy(replicas=replicas, good_replicas=1))
    assert seen.verdict[:2] == ("True", Reason.BROKER_REPLICATED)
    assert "2 of 3 members in sync" in seen.verdict[2]


def test_sentinels_that_cannot_fail_over_are_said() -> None:
    seen = broker_replication.assess(_healthy(answering=1, quorum_problem="NOQUORUM 1 usable Sentinels"))
    assert seen.verdict[:2] == ("False", Reason.BROKER_QUORUM_LOST)
    assert "NOQUORUM" in seen.verdict[2]


@pytest.mark.parametrize(
    ("changes", "reason", "said"),
    [
        ({"error": "s1:26379: ConnectionError", "master": None}, Reason.BROKER_UNREACHABLE, "no Sentinel answers"),
        ({"master": None}, Reason.BROKER_NO_MASTER, "no Sentinel knows a master named 'jobqueue'"),
        ({"master_problem": "the Sentinels flag it s_down"}, Reason.BROKER_NO_MASTER, "flag it s_down"),
    ],
)
def test_no_working_master_is_not_available_and_has_no_replica_series(
    changes: dict[str, Any], reason: Reason, said: str
) -> None:
    seen = broker_replication.assess(_healthy(**changes, replicas=()))
    assert seen.verdict[:2] == ("False", reason)
    assert said in seen.verdict[2]
    assert seen.replicas == {}
    assert seen.lag_seconds is None


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"replicas": (Replica("10.0.0.2:6379"),), "good_replicas": 0},
        {"replicas": (Replica("10.0.0.2:6379"),), "good_replicas": None, "min_replicas_to_write": None},
        {"quorum_problem": "NOQUORUM 1 usable Sentinels"},
        {"master": None},
        {"error": "s1:26379: ConnectionError"},
    ],
    ids=["replicated", "writes-refused", "under-replicated", "quorum-lost", "no-master", "unreachable"],
)
def test_every_reason_of_broker_available_is_a_value_of_the_availability_series(changes: dict[str, Any]) -> None:
    """The alert rules select on `jobqueue_broker_availability{reason}`: a reason missing from the list would
    export all zeros, and its alert would never fire."""
    reason = broker_replication.assess(_healthy(**changes)).verdict[1]
    assert reason in broker_replication.AVAILABILITY_REASONS


def test_replicas_are_known_from_the_sentinels_and_the_master() -> None:
    sentinel_view = [
        {"ip": "10.0.0.2", "port": 6379, "flags": "slave", "master-link-status": "ok"},
        {"ip": "10.0.0.3", "port": 6379, "flags": "s_down,slave,disconnected", "master-link-status": "err"},
    ]
    info = {
        "role": "master",
        "slave0": {"ip": "10.0.0.2", "port": 6379, "state": "online", "offset": 5, "lag": 0},
        "slave1": {"ip": "10.0.0.4", "port": 6379, "state": "send_bulk", "offset": 0, "lag": 0},
    }
    found = broker_replication.replicas(sentinel_view, info)
    assert found == (
        Replica("10.0.0.2:6379", state="online", lag_seconds=0, offset=5),
        Replica("10.0.0.3:6379"),
        Replica("10.0.0.4:6379", state="send_bulk", lag_seconds=0, offset=0),
    )


def test_the_sentinel_with_the_latest_configuration_is_believed() -> None:
    old = {"ip": "10.0.0.1", "port": 6379, "config-epoch": 0}
    new = {"ip": "10.0.0.2", "port": 6379, "config-epoch": 1}
    assert broker_replication.newest([old, new, old]) is new
    assert broker_replication.master_down({"flags": "master,s_down"}) == "the Sentinels flag it s_down"
    assert broker_replication.master_down({"flags": "master"}) is None


# -- between looks


def test_the_first_look_is_a_baseline_and_the_same_master_no_failover() -> None:
    first, failover = broker_replication.follow(None, _healthy(at=10.0))
    assert (first, failover) == (MasterSeen("10.0.0.1:6379", 10.0), None)
    again, failover = broker_replication.follow(first, _healthy(at=15.0))
    assert (again, failover) == (MasterSeen("10.0.0.1:6379", 15.0), None)


def test_a_new_master_is_a_failover_with_the_old_the_new_and_how_long_it_took() -> None:
    before = MasterSeen("10.0.0.1:6379", 100.0, last_answer=99.8)
    during = _healthy(at=105.0, master_problem="the Sentinels flag it s_down", last_answer=101.25)
    kept, failover = broker_replication.follow(before, during)
    assert failover is None  # no working master: nothing is said yet, only when the old one last answered
    assert kept == MasterSeen("10.0.0.1:6379", 100.0, last_answer=101.25)
    after = _healthy(at=112.5, master="10.0.0.2:6379", epoch=1, last_answer=112.4, since=108.0)
    now, failover = broker_replication.follow(kept, after)
    assert now == MasterSeen("10.0.0.2:6379", 112.5, last_answer=112.4)
    assert failover == broker_replication.Failover("10.0.0.1:6379", "10.0.0.2:6379", 101.25, 108.0)
    event = failover.event("jobqueue")
    assert (event.type, event.reason) == ("Warning", Reason.BROKER_FAILOVER)
    assert "moved from 10.0.0.1:6379 to 10.0.0.2:6379" in event.message
    assert "no master for 6.8 s, from the old master's last answer (00:01:41Z)" in event.message
    assert "promotion (00:01:48Z)" in event.message


def test_without_the_sentinels_times_a_failover_spans_the_operators_own_looks() -> None:
    """A failover over between two looks: from the last look at the old master to the first at the new."""
    _, failover = broker_replication.follow(MasterSeen("10.0.0.1:6379", 100.0), _healthy(at=111.0, master="b:1"))
    assert failover is not None
    assert (failover.old_last_answer, failover.promoted, failover.seconds) == (100.0, 111.0, 11.0)


# -- the tick

SENTINEL_URL = "sentinel://:p@s1:26379;sentinel://:p@s2:26379;sentinel://:p@s3:26379"


def _body() -> dict[str, Any]:
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "broker": {"external": {"urlSecretRef": {"name": "url", "key": "url"}}},
            "queues": [{"name": "q", "concurrency": 1}],
        },
    }


def _kube(url: str) -> FakeKube:
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(url.encode()).decode()}
    return kube


@pytest.fixture
def looks(monkeypatch: pytest.MonkeyPatch) -> list[Members]:
    """The looks at the members the next ticks get, in order; the broker's other reads answer empty."""
    queued: list[Members] = []
    monkeypatch.setattr(broker_sentinel, "read", lambda url, *_, **__: queued.pop(0))
    monkeypatch.setattr(broker, "read_counts", lambda url, keys, **_: {k.name: broker.QueueCounts(0, 0) for k in keys})
    monkeypatch.setattr(broker, "list_incarnations", lambda *_, **__: [])
    monkeypatch.setattr(broker, "unserved_queues", lambda *_, **__: broker.UnservedQueues({}, complete=True))
    monkeypatch.setattr(broker, "memory_usage", lambda *_, **__: (0, 0))
    monkeypatch.setattr(podmetrics, "busy", lambda pods, concurrency: {})
    return queued


def _condition(kube: FakeKube) -> dict[str, Any] | None:
    conditions = kube.status[naming.AUTOSCALER_FIELD_MANAGER].get("conditions") or []
    return next((c for c in conditions if c["type"] == status.BROKER_AVAILABLE), None)


def _availability(metrics: OperatorMetrics) -> str:
    """The one reason `jobqueue_broker_availability` says is current (1), every other reason being 0."""
    values = {
        reason: metrics.registry.get_sample_value(
            "jobqueue_broker_availability", {"namespace": "ns", "jobqueue": "m", "reason": reason}
        )
        for reason in broker_replication.AVAILABILITY_REASONS
    }
    (current,) = [reason for reason, value in values.items() if value == 1]
    assert {value for reason, value in values.items() if reason != current} == {0}
    return current


def test_a_tick_on_a_sentinel_broker_says_its_members_and_a_failover(looks: list[Members]) -> None:
    kube, memory, metrics = _kube(SENTINEL_URL), scaling.Memory(), OperatorMetrics()
    looks += [
        _healthy(at=100.0),
        _healthy(at=105.0, master_problem="the Sentinels flag it s_down", replicas=()),
        _healthy(at=111.0, master="10.0.0.2:6379", epoch=1),
    ]
    scaling.tick(kube, _body(), memory, metrics)
    condition = _condition(kube)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", Reason.BROKER_REPLICATED)
    assert (
        metrics.registry.get_sample_value("jobqueue_broker_failovers_total", {"namespace": "ns", "jobqueue": "m"}) == 0
    )
    in_sync = {"namespace": "ns", "jobqueue": "m", "state": "in_sync"}
    assert metrics.registry.get_sample_value("jobqueue_broker_replicas", in_sync) == 2
    labels = {"namespace": "ns", "jobqueue": "m"}
    assert metrics.registry.get_sample_value("jobqueue_broker_replication_lag_bytes", labels) == 100
    assert _availability(metrics) == Reason.BROKER_REPLICATED

    scaling.tick(kube, _body(), memory, metrics)  # the master is down: no master, a Warning, no failover yet
    condition = _condition(kube)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("False", Reason.BROKER_NO_MASTER)
    assert not [e for e in kube.events if e[1] == Reason.BROKER_FAILOVER]
    assert metrics.registry.get_sample_value("jobqueue_broker_replicas", in_sync) is None
    assert _availability(metrics) == Reason.BROKER_NO_MASTER

    scaling.tick(kube, _body(), memory, metrics)  # a replica was promoted
    condition = _condition(kube)
    assert condition is not None
    assert (condition["status"], condition["reason"]) == ("True", Reason.BROKER_REPLICATED)
    assert condition["message"].startswith("master 10.0.0.2:6379")
    (failover,) = [e for e in kube.events if e[1] == Reason.BROKER_FAILOVER]
    assert "from 10.0.0.1:6379 to 10.0.0.2:6379" in failover[2]
    assert "no master for 11.0 s" in failover[2]
    assert metrics.registry.get_sample_value("jobqueue_broker_failovers_total", labels) == 1


def test_a_redis_broker_has_no_members_condition_and_no_replication_series(looks: list[Members]) -> None:
    kube, memory, metrics = _kube("redis://:p@h:6379/0"), scaling.Memory(), OperatorMetrics()
    scaling.tick(kube, _body(), memory, metrics)
    assert _condition(kube) is None
    labels = {"namespace": "ns", "jobqueue": "m"}
    assert metrics.registry.get_sample_value("jobqueue_broker_failovers_total", labels) is None
    assert metrics.registry.get_sample_value("jobqueue_broker_replicas", {**labels, "state": "in_sync"}) is None
    reason = {**labels, "reason": Reason.BROKER_REPLICATED}
    assert metrics.registry.get_sample_value("jobqueue_broker_availability", reason) is None


# -- the reconciler folds it into Ready and Degraded


@pytest.mark.parametrize(
    ("reason", "stops_service"),
    [(Reason.BROKER_WRITES_REFUSED, True), (Reason.BROKER_UNDER_REPLICATED, False), (Reason.BROKER_QUORUM_LOST, False)],
)
def test_the_reconciler_folds_broker_available_into_degraded_and_a_refusal_into_ready(
    reason: Reason, stops_service: bool
) -> None:
    kube = FakeKube()
    said = "the members say so"
    condition = {"type": status.BROKER_AVAILABLE, "status": "False", "reason": reason, "message": said}
    body = {"apiVersion": "jobqueue.dev/v1alpha1", "kind": "JobQueue", **_body(), "status": {"conditions": [condition]}}
    reconcile.reconcile(kube, body, reconcile.Memory(), "2030-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}
    assert conditions["Degraded"]["status"] == "True"
    assert said in conditions["Degraded"]["message"]
    assert (conditions["Ready"]["reason"] == reason) is stops_service
    assert status.BROKER_AVAILABLE not in conditions  # the tick's condition: the reconciler does not write it
    assert not [event for event in kube.events if event[1] == reason]  # its Warning is the tick's


def test_a_change_of_broker_available_asks_for_a_reconcile_so_ready_follows_within_a_second() -> None:
    def written(state: str, reason: str) -> dict[str, Any]:
        return {"conditions": [{"type": status.BROKER_AVAILABLE, "status": state, "reason": reason}]}

    healthy = runtime._folded(written("True", Reason.BROKER_REPLICATED))
    assert runtime._folded(written("False", Reason.BROKER_UNDER_REPLICATED)) != healthy
    refused = runtime._folded(written("False", Reason.BROKER_WRITES_REFUSED))
    assert refused != runtime._folded(written("False", Reason.BROKER_UNDER_REPLICATED))  # Ready changes with it
    assert runtime._folded(written("True", Reason.BROKER_REPLICATED)) == healthy
