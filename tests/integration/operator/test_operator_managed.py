"""A managed-broker JobQueue all the way to Ready=True: its Redis and its workers really run.

The node agent runs the Pods (redis-server, `jobqueue-worker` with the built-in demo app). The operator
runs on the host through `python -m jobqueue_devenv exec`, which gives it the Pods' view of Service
names, so it reaches `<jq>-redis.<ns>.svc` as it would in a cluster.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker.contract import WORKER_COMMAND
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in, jobqueue_manifest


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` on the host, resolving Service names like a Pod; yields its log file."""
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory) as running:
        yield running.log


SHORT = {"timeLimitSeconds": 10}
"""A grace period of 40 s: the broker goes with the JobQueue, so a worker's warm shutdown may wait it out."""


def _jobqueue(name: str) -> dict[str, Any]:
    """Three queues of the built-in demo app, one worker each, on a managed Redis without a volume."""
    queues = [
        {"name": "high", "concurrency": 1, "pool": "solo", "replicas": 1, **SHORT},
        {"name": "low", "concurrency": 1, "pool": "solo", "replicas": 1, **SHORT},
        {"name": "bulk", "concurrency": 2, "pool": "threads", "replicas": 1, **SHORT},
    ]
    return jobqueue_manifest(name, queues, broker={"managed": {"persistence": {"enabled": False}}})


def test_a_managed_broker_jobqueue_with_three_queues_becomes_ready(
    hosted_operator: Path,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, _jobqueue("shop"))

    def ready() -> dict[str, Any] | None:
        body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "shop")
        found = condition(body, "Ready")
        current = found is not None and found["observedGeneration"] == body["metadata"]["generation"]
        # The worker counts come from the autoscaler's tick too, which may lag the condition by a tick.
        counted = body["status"].get("workers") == "3/3"
        return body if current and counted and found is not None and found["status"] == "True" else None

    body = wait_until(ready, timeout=180, what="shop Ready=True")
    assert condition(body, "Ready")["reason"] == "AllQueuesAvailable"  # type: ignore[index]
    assert condition(body, "BrokerReady")["reason"] == "RedisReady"  # type: ignore[index]
    assert condition(body, "WorkersAvailable")["status"] == "True"  # type: ignore[index]
    assert condition(body, "Degraded")["status"] == "False"  # type: ignore[index]
    assert [q["readyReplicas"] for q in body["status"]["queues"]] == [1, 1, 1]

    selector = "jobqueue.dev/jobqueue=shop"
    pods = core.list_namespaced_pod(ns, label_selector=f"{selector},app.kubernetes.io/component=worker").items
    assert sorted(p.metadata.labels["jobqueue.dev/queue"] for p in pods) == ["bulk", "high", "low"]
    assert {tuple(p.spec.containers[0].command) for p in pods} == {WORKER_COMMAND}

    # The autoscaler's tick reads queue depth from the managed Redis by its Service name.
    wait_until(
        lambda: custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "shop")["status"].get("backlog") == 0,
        timeout=60,
        what="shop's backlog read from its Redis",
    )
    assert "Traceback" not in hosted_operator.read_text()

    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, "shop")

    def gone() -> bool:
        return not (
            apps.list_namespaced_deployment(ns, label_selector=selector).items
            or apps.list_namespaced_stateful_set(ns, label_selector=selector).items
            or core.list_namespaced_service(ns, label_selector=selector).items
            or core.list_namespaced_secret(ns, label_selector=selector).items
            or core.list_namespaced_pod(ns, label_selector=selector).items
        )

    wait_until(gone, timeout=120, what="shop's children and Pods deleted")
