"""The operator process on the real local cluster, with an external broker reached through Sentinel (three
redis-server and three Sentinel processes on the host, `jobqueue_devenv.sentinel_process`): its status says
the master and the members in sync, it reads depth through the Sentinels, and after a SIGKILL of the master
it posts a BrokerFailover Event naming the old and the new master, counts it, and reads the same tasks from
the new master (docs/broker.md, "What the operator tells you").

The JobQueue's one queue has no workers (workers through a failover: tests/integration/worker/test_sentinel.py),
so its tasks stay and Ready depends on the broker alone.
"""

from __future__ import annotations

import urllib.request
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    apply_jobqueue,
    get_jobqueue,
    hosted_operator_in,
    jobqueue_manifest,
)

NAME = "members"
PARKED = "parked"
"""A queue without workers: its tasks stay, so its depth is what the operator reads."""


@pytest.fixture(scope="module")
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


def _conditions(custom: client.CustomObjectsApi, namespace: str) -> dict[str, dict[str, Any]]:
    status = get_jobqueue(custom, namespace, NAME).get("status") or {}
    return {c["type"]: c for c in status.get("conditions") or []}


def _parked(custom: client.CustomObjectsApi, namespace: str) -> int | None:
    status = get_jobqueue(custom, namespace, NAME).get("status") or {}
    return next((q.get("ready") for q in status.get("queues") or [] if q.get("name") == PARKED), None)


def _failovers(metrics_port: int, namespace: str) -> float | None:
    text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).read().decode()
    wanted = f'jobqueue_broker_failovers_total{{jobqueue="{NAME}",namespace="{namespace}"}}'
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(wanted)), None)


def test_the_operator_follows_an_external_sentinel_broker_through_a_failover(
    local_cluster: cluster.ClusterState,
    operator_namespace: str,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    group: SentinelGroup,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    ns, url = operator_namespace, group.sentinel_url()
    core.create_namespaced_secret(ns, {"metadata": {"name": "broker"}, "stringData": {"url": url}})
    document = jobqueue_manifest(
        NAME,
        [{"name": PARKED, "replicas": 0}],
        broker={"external": {"urlSecretRef": {"name": "broker", "key": "url"}}},
    )
    app = producer.producer_app(url)
    try:
        producer.send(app, PARKED, "noop", 4, run_id=uuid.uuid4().hex, ignore_result=True)
    finally:
        app.close()
    group.master().client().execute_command("WAIT", 2, 5000)  # both replicas hold the tasks

    with hosted_operator_in(local_cluster, ns, tmp_path_factory, tick=1) as running:
        apply_jobqueue(kubectl, ns, document)
        first = group.master_address()

        def available() -> dict[str, dict[str, Any]] | None:
            found = _conditions(custom, ns)
            ok = all(
                found.get(kind, {}).get("status") == "True" for kind in ("BrokerAvailable", "BrokerReady", "Ready")
            )
            return found if ok else None

        conditions = wait_until(available, timeout=120, what="BrokerAvailable, BrokerReady and Ready True")
        assert conditions["BrokerAvailable"]["message"].startswith(f"master {first[0]}:{first[1]}, 3 of 3 members")
        wait_until(lambda: _parked(custom, ns) == 4, timeout=30, what="the parked queue's depth, read via Sentinel")
        assert _failovers(running.metrics_port, ns) == 0

        old = group.kill_master()

        def failover() -> str | None:
            events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={NAME},type=Warning")
            return next((e.message for e in events.items if e.reason == "BrokerFailover"), None)

        message = wait_until(failover, timeout=120, what="a BrokerFailover Event")
        new = group.master_address()
        assert f"from {old[0]}:{old[1]} to {new[0]}:{new[1]}" in message
        print(f"\n{message}")  # pytest -s: how long the operator saw no working master

        def follows() -> dict[str, Any] | None:
            found = _conditions(custom, ns).get("BrokerAvailable") or {}
            return found if found.get("message", "").startswith(f"master {new[0]}:{new[1]}") else None

        assert wait_until(follows, timeout=60, what="BrokerAvailable naming the new master")["status"] == "True"
        assert _failovers(running.metrics_port, ns) == 1
        assert _parked(custom, ns) == 4  # the tasks the replicas held, read from the new master
        wait_until(lambda: available() is not None, timeout=120, what="BrokerReady and Ready True after the failover")
        kubectl("delete", "jq", "-n", ns, NAME)
