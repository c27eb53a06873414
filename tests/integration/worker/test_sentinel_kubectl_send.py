"""`kubectl jobqueue send` on a JobQueue whose external broker is a Sentinel group (three redis-server and three
Sentinel processes, `jobqueue_devenv.sentinel_process`, monitoring the master under a name of their own): the
URL and the master name come from the broker's Secret, the tasks go to the master the Sentinels name, and a
send is reported only once a replica holds it (the confirming producer)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_kubectl import sending
from jobqueue_kubectl.errors import PluginError
from jobqueue_operator import naming
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

MASTER_NAME = "orders-broker"
TASK = "jobqueue_worker.tasks.noop"


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel"), master_name=MASTER_NAME) as started:
        yield started


class Secrets:
    """The part of jobqueue_kubectl.cluster.Cluster that `sending` reads: one Secret, `broker`."""

    def __init__(self, data: dict[str, str]) -> None:
        self.data = data

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        assert (namespace, name) == ("default", "broker")
        return dict(self.data)

    def pod_ip(self, namespace: str, name: str) -> str | None:
        raise AssertionError("an external broker is never reached by a Pod's IP")


def body(queue: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "orders", "namespace": "default"},
        "spec": {
            "broker": {"external": {"urlSecretRef": {"name": "broker", "key": "url"}}},
            "queues": [{"name": queue}],
        },
    }


def lengths(group: SentinelGroup, queue: str) -> dict[int, int]:
    """The queue's length on every live member, by port."""
    return {port: int(group.servers[port].client().llen(queue)) for port in sorted(group.live_ports())}


def test_send_goes_to_the_master_named_in_the_secret_and_is_confirmed_by_a_replica(group: SentinelGroup) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    api = Secrets({"url": group.sentinel_url(), naming.MASTER_NAME_KEY: MASTER_NAME})
    ids = sending.send(api, body(queue), queue, TASK, {}, 3, None)  # type: ignore[arg-type]
    assert len(set(ids)) == 3
    held = lengths(group, queue)
    assert held[group.master_port()] == 3
    assert any(held[port] == 3 for port in group.replica_ports()), held  # WAIT 1: a replica had them all


def test_without_the_master_name_the_send_is_refused_in_one_line_naming_the_master_asked_for(
    group: SentinelGroup,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    api = Secrets({"url": group.sentinel_url()})  # the Sentinels know no master "jobqueue"
    with pytest.raises(PluginError) as refused:
        sending.send(api, body(queue), queue, TASK, {}, 1, None)  # type: ignore[arg-type]
    message = str(refused.value)
    assert "\n" not in message
    assert f"master {SENTINEL_MASTER_NAME!r}" in message
    assert group.password not in message


def test_a_send_no_replica_confirms_is_an_error_not_a_success(group: SentinelGroup) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    api = Secrets({"url": group.sentinel_url(), naming.MASTER_NAME_KEY: MASTER_NAME})
    for port in group.replica_ports():  # hung: the master still counts them in sync for min-replicas-max-lag
        group.freeze(port)
    with pytest.raises(PluginError) as refused:
        sending.send(api, body(queue), queue, TASK, {}, 2, None)  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("0 of 2 sent and confirmed, then: the broker took the task but 0 of the 1 replicas")
    assert "\n" not in message


def test_a_master_that_refuses_writes_ends_the_send_in_one_line_saying_how_many_were_sent(
    group: SentinelGroup,
) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    api = Secrets({"url": group.sentinel_url(), naming.MASTER_NAME_KEY: MASTER_NAME})
    for port in group.replica_ports():
        group.freeze(port)
    master = group.master().client()
    wait_until(
        lambda: int(master.info("replication").get("min_slaves_good_slaves", -1)) == 0,
        timeout=60,
        what="the master counting no replica in sync (min-replicas-max-lag 10 s)",
    )
    with pytest.raises(PluginError) as refused:  # NOREPLICAS, sent again for 10 s (while_no_replica), then given up
        sending.send(api, body(queue), queue, TASK, {}, 2, None)  # type: ignore[arg-type]
    message = str(refused.value)
    assert message.startswith("0 of 2 sent, then the broker failed: "), message
    assert "NOREPLICAS" in message
    assert message.isprintable(), message  # one line, kombu's \x06\x16 separators escaped
