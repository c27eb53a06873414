"""A highly available managed broker on the local cluster: the operator's objects come up, the members find
their places by themselves (the first member master, two replicas in sync), the workers consume through the
Sentinels, and when the master's Pod is deleted the Sentinels promote a replica, the workers go on, and the
deleted member comes back as a replica.

The operator runs on the host (`hosted_operator_in`); the test reaches the members and the Sentinels at their
Pod IPs, as the host can, and names the master the way the Sentinels do (its Pod's DNS name).
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import SENTINEL_MEMBERS
from jobqueue_worker import producer
from jobqueue_worker.contract import SENTINEL_MASTER_NAME
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in, jobqueue_manifest

NAME = "ha"
QUEUE = "work"


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory):
        yield


def _ready_pods(core: client.CoreV1Api, namespace: str, component: str) -> dict[str, str] | None:
    """Pod name -> IP of the JobQueue's ready Pods of `component`, when all three are ready."""
    selector = f"{naming.JOBQUEUE_LABEL}={NAME},{naming.COMPONENT_LABEL}={component}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = {
        p.metadata.name: p.status.pod_ip
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }
    return ready if len(ready) == SENTINEL_MEMBERS else None


def _master(sentinels: dict[str, str], password: str) -> str | None:
    """The Pod name the Sentinels name master (their answer is its DNS name), when they all agree."""
    answers = set()
    for ip in sentinels.values():
        try:
            found = redis.Redis(ip, redis_build.SENTINEL_PORT, password=password, socket_timeout=3).execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME
            )
        except redis.RedisError:
            return None
        if not found:
            return None
        answers.add(found[0].decode().split(".")[0])
    return answers.pop() if len(answers) == 1 else None


def _replicas_online(ip: str, password: str) -> int:
    info: dict[str, Any] = redis.Redis(ip, redis_build.PORT, password=password, socket_timeout=3).info("replication")
    if info.get("role") != "master":
        return -1
    return sum(1 for key, value in info.items() if key.startswith("slave") and value.get("state") == "online")


def test_a_highly_available_broker_replicates_and_survives_the_loss_of_its_master(
    hosted_operator: None, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str
) -> None:
    ns = operator_namespace
    queues = [{"name": QUEUE, "concurrency": 2, "pool": "threads", "replicas": 1, "timeLimitSeconds": 10}]
    broker = {"managed": {"persistence": {"enabled": False}, "highAvailability": {"enabled": True}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, jobqueue_manifest(NAME, queues, broker=broker))

    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=240, what="3 ready Redis members")
    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL), timeout=120, what="3 ready Sentinels")
    secret = core.read_namespaced_secret(naming.redis_secret(NAME), ns).data
    password = base64.b64decode(secret[naming.PASSWORD_KEY]).decode()
    assert base64.b64decode(secret[naming.URL_KEY]).decode().startswith(f"sentinel://:{password}@ha-sentinel.{ns}.svc")

    first = f"{naming.redis(NAME)}-0"
    assert wait_until(lambda: _master(sentinels, password), timeout=60, what="the Sentinels agree") == first
    wait_until(
        lambda: _replicas_online(members[first], password) == SENTINEL_MEMBERS - 1,
        timeout=120,
        what="INFO replication on the master shows 2 replicas online",
    )

    def consumed(master_ip: str) -> None:
        app = producer.producer_app(f"redis://:{password}@{master_ip}:{redis_build.PORT}/0")
        run_id = uuid.uuid4().hex
        producer.send(app, QUEUE, "noop", 3, run_id=run_id)
        wait_until(lambda: producer.done_count(app, run_id) == 3, timeout=120, what="3 tasks done by the workers")

    consumed(members[first])

    deleted_at = time.monotonic()
    core.delete_namespaced_pod(first, ns, grace_period_seconds=0)
    promoted = wait_until(
        lambda: (found := _master(sentinels, password)) not in (None, first) and found,
        timeout=30,
        what="the Sentinels promote another member",
    )
    print(f"master {first} deleted; {promoted} promoted after {time.monotonic() - deleted_at:.1f} s")
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=180, what="3 ready members again")
    consumed(members[str(promoted)])  # the workers moved to the new master by themselves
    wait_until(
        lambda: _replicas_online(members[str(promoted)], password) == SENTINEL_MEMBERS - 1,
        timeout=120,
        what=f"{first} back as a replica of {promoted}",
    )
