"""The operator's own Redis clients through Sentinel, and what it says of the broker's members, against a real
Sentinel group (`jobqueue_devenv.sentinel_process`: three redis-server and three Sentinel processes, the
managed broker's settings) and a real failover (the master SIGKILLed).

No cluster: the tick runs against the fake API server of the unit tests (its Secret holds the sentinel://
URL); everything it reads of the broker is real.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue_devenv.processes import free_port
from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker, broker_replication, broker_sentinel, naming, scaling, status
from jobqueue_operator.broker import QueueKeys
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.reasons import Reason
from jobqueue_worker import producer
from tests.unit.operator.fake_kube import FakeKube


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    """A healthy group the read-only tests share."""
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


def _send(url: str, queue: str, count: int) -> None:
    app = producer.producer_app(url)
    try:
        producer.send(app, queue, "noop", count, run_id=uuid.uuid4().hex, ignore_result=True)
    finally:
        app.close()


def test_the_operator_reads_depth_memory_and_workers_through_the_sentinels(group: SentinelGroup) -> None:
    url, queue = group.sentinel_url(), f"q-{uuid.uuid4().hex[:8]}"
    _send(url, queue, 5)
    broker.ping(url)
    assert broker.read_counts(url, [QueueKeys(queue)])[queue].ready == 5
    used, _ = broker.memory_usage(url)
    assert used > 0
    assert broker.list_incarnations(url, queues=[queue]) == []
    with broker.client_for(url) as client:  # the client is the master's
        assert client.info("replication")["role"] == "master"
        assert client.info("server")["tcp_port"] == group.master_port()


def test_sentinels_that_do_not_answer_are_a_bounded_broker_error_without_the_password() -> None:
    dead = [free_port(), free_port()]
    url = ";".join(f"sentinel://:hunter2@127.0.0.1:{port}/0" for port in dead)
    with pytest.raises(broker.BrokerError) as raised:
        broker.read_counts(url, [QueueKeys("q")], timeout=0.5)
    message = str(raised.value)
    assert f"127.0.0.1:{dead[0]}" in message
    assert "jobqueue" in message
    assert "hunter2" not in message
    with pytest.raises(broker.BrokerError):
        broker.ping(url, timeout=0.5)
    seen = broker_sentinel.read(url, timeout=0.5)
    assert seen.error is not None
    assert "hunter2" not in seen.error
    assert broker_replication.assess(seen).verdict[:2] == ("False", Reason.BROKER_UNREACHABLE)


def test_sentinels_that_refuse_the_password_are_an_auth_error(group: SentinelGroup) -> None:
    url = group.sentinel_url().replace(group.password, "wrong")
    with pytest.raises(broker.BrokerAuthError, match="the Sentinels refuse the password") as raised:
        broker.ping(url)
    assert "wrong" not in str(raised.value)
    with pytest.raises(broker.BrokerError, match="the Sentinels refuse the password"):
        broker.read_counts(url, [QueueKeys("q")])
    seen = broker_sentinel.read(url)
    assert seen.error is not None
    assert "AuthenticationError" in seen.error


def test_a_healthy_group_is_available_with_every_member_in_sync(group: SentinelGroup) -> None:
    seen = broker_sentinel.read(group.sentinel_url())
    host, port = group.master_address()
    assert seen.master == f"{host}:{port}"
    assert seen.answering == 3
    assert seen.min_replicas_to_write == 1
    assert seen.max_lag_seconds == 10
    verdict = broker_replication.assess(seen)
    assert verdict.verdict[:2] == ("True", Reason.BROKER_REPLICATED), verdict.verdict
    assert verdict.verdict[2].startswith(f"master {host}:{port}, 3 of 3 members in sync")
    assert verdict.replicas == {"in_sync": 2, "lagging": 0, "syncing": 0, "down": 0}


def test_a_master_name_the_sentinels_do_not_monitor_is_no_master(group: SentinelGroup) -> None:
    seen = broker_sentinel.read(group.sentinel_url(), master_name="not-ours")
    assert (seen.master, seen.answering) == (None, 3)
    assert broker_replication.assess(seen).verdict[:2] == ("False", Reason.BROKER_NO_MASTER)


# -- through a failover, and the master left without replicas (each on a group of its own)


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


def _available(kube: FakeKube) -> dict[str, Any]:
    conditions = kube.status[naming.AUTOSCALER_FIELD_MANAGER].get("conditions") or []
    return next(c for c in conditions if c["type"] == status.BROKER_AVAILABLE)


def test_after_the_master_is_killed_the_tick_names_the_new_master_and_posts_a_failover(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with SentinelGroup.running(tmp_path_factory.mktemp("failover")) as group:
        url = group.sentinel_url()
        kube, memory, metrics = FakeKube(), scaling.Memory(), OperatorMetrics()
        kube.secrets["url"] = {"url": base64.b64encode(url.encode()).decode()}
        _send(url, "q", 4)
        group.master().client().execute_command("WAIT", 2, 5000)  # both replicas have them

        scaling.tick(kube, _body(), memory, metrics)
        assert _available(kube)["status"] == "True", _available(kube)
        old = group.kill_master()

        def failed_over() -> bool:
            scaling.tick(kube, _body(), memory, metrics)
            return any(reason == Reason.BROKER_FAILOVER for _, reason, _ in kube.events)

        wait_until(failed_over, timeout=90, what="the tick to see a new master and post BrokerFailover")
        new = group.master_address()
        (event,) = [message for _, reason, message in kube.events if reason == Reason.BROKER_FAILOVER]
        assert f"from {old[0]}:{old[1]} to {new[0]}:{new[1]}" in event
        print(f"\n{event}")  # the time it took, as the Sentinels told the operator (pytest -s)
        labels = {"namespace": "ns", "jobqueue": "m"}
        assert metrics.registry.get_sample_value("jobqueue_broker_failovers_total", labels) == 1
        status_body = kube.status[naming.AUTOSCALER_FIELD_MANAGER]
        assert status_body["queues"][0]["ready"] == 4  # read from the new master: the replicated tasks are there

        # The old master is gone: two members of three, still in sync, still available; it says so.
        wait_until(
            lambda: (scaling.tick(kube, _body(), memory, metrics), _available(kube)["status"] == "True")[1],
            timeout=60,
            what="BrokerAvailable True on the new master",
        )
        condition = _available(kube)
        assert condition["message"].startswith(f"master {new[0]}:{new[1]}, 2 of 3 members in sync"), condition
        assert f"{old[0]}:{old[1]} down" in condition["message"]
        print(condition["message"])
        assert metrics.registry.get_sample_value("jobqueue_broker_replicas", {**labels, "state": "down"}) == 1
        replicated = {**labels, "reason": Reason.BROKER_REPLICATED}  # what the alert rules select on
        assert metrics.registry.get_sample_value("jobqueue_broker_availability", replicated) == 1


def test_a_master_without_replicas_in_sync_refuses_writes_and_the_condition_says_so(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    with SentinelGroup.running(tmp_path_factory.mktemp("alone")) as group:
        url = group.sentinel_url()
        master = group.master_port()
        for port, server in group.servers.items():
            if port != master:
                server.stop()

        def refused() -> broker_replication.Assessment | None:
            seen = broker_replication.assess(broker_sentinel.read(url))
            return seen if seen.verdict[1] == Reason.BROKER_WRITES_REFUSED else None

        found = wait_until(refused, timeout=60, what="the master to refuse writes (min-replicas-max-lag 10 s)")
        assert found.verdict[0] == "False"
        assert "1 of 3 members in sync" in found.verdict[2]
        assert found.replicas["down"] == 2
        with pytest.raises(broker.BrokerError, match="NOREPLICAS"), broker.connected(url) as client:
            client.lpush("q", "x")  # what a producer meets meanwhile
