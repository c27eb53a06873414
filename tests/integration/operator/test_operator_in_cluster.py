"""The operator installed with its Helm chart runs IN the local cluster, with the chart's RBAC only.

The node agent runs the operator's Pod (its ServiceAccount token mounted where in-cluster clients look
for it), the operator creates a managed Redis whose data lives on a PersistentVolumeClaim of the
default `local-path` class, and the JobQueue reports BrokerReady: the chart's RBAC is enough.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.paths import CHART
from jobqueue_devenv.waiting import wait_until
from tests.conftest import helm
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, jobqueue_manifest


def jobqueue(name: str) -> dict[str, Any]:
    """Three queues of the built-in demo app on a managed Redis with a persistent volume."""
    queues = [
        {"name": "high", "concurrency": 1, "pool": "solo", "replicas": 1},
        {"name": "low", "concurrency": 1, "pool": "solo", "replicas": 1},
        {"name": "thumbnails", "concurrency": 1, "pool": "threads", "replicas": 1},
    ]
    return jobqueue_manifest(name, queues, broker={"managed": {"persistence": {"enabled": True, "size": "1Gi"}}})


def ready(pod: client.V1Pod) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


@pytest.fixture
def operator_release(local_cluster: cluster.ClusterState, core: client.CoreV1Api) -> Iterator[tuple[str, str]]:
    """The chart installed in a namespace of its own, watching a second namespace; yields both names."""
    suffix = uuid.uuid4().hex[:6]
    system, watched = f"jqsys-{suffix}", f"jqapp-{suffix}"
    release = f"jq-{suffix}"
    for name in (system, watched):
        core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    # Only the watched namespace: the session's other tests run operators of their own elsewhere.
    helm(
        "install",
        release,
        str(CHART),
        "-n",
        system,
        # The host-process image: the operator runs from this checkout's virtualenv (the chart's `command`
        # path); the e2e tests run it from its image.
        "--set",
        f"image.repository={HOST_PROCESS_IMAGE.rsplit(':', 1)[0]}",
        "--set",
        f"image.tag={HOST_PROCESS_IMAGE.rsplit(':', 1)[1]}",
        "--set",
        "command={jobqueue-operator}",
        "--set",
        f"watch.namespaces={{{watched}}}",
        "--set",
        "resyncSeconds=3",
        kubeconfig=local_cluster.kubeconfig,
    )
    try:
        yield system, watched
    finally:
        helm("uninstall", release, "-n", system, "--wait", kubeconfig=local_cluster.kubeconfig)
        # Without its operator a JobQueue keeps kopf's finalizer: drop it so the namespace can go.
        custom = client.CustomObjectsApi(core.api_client)
        for item in custom.list_namespaced_custom_object(GROUP, VERSION, watched, PLURAL)["items"]:
            name = item["metadata"]["name"]
            custom.patch_namespaced_custom_object(
                GROUP, VERSION, watched, PLURAL, name, {"metadata": {"finalizers": None}}
            )
        for name in (watched, system):
            core.delete_namespace(name)


def test_helm_installed_operator_runs_in_cluster_and_brings_up_a_managed_redis_on_a_volume(
    operator_release: tuple[str, str], core: client.CoreV1Api, local_cluster: cluster.ClusterState
) -> None:
    system, watched = operator_release
    operator_pod = wait_until(
        lambda: next((p for p in core.list_namespaced_pod(system).items if ready(p)), None),
        timeout=90,
        what="the operator Pod Ready",
    )
    assert operator_pod.spec.containers[0].command == ["jobqueue-operator"]
    assert operator_pod.spec.service_account_name.endswith("jobqueue-operator")

    custom = client.CustomObjectsApi(core.api_client)
    custom.create_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, jobqueue("media"))

    def redis_ready() -> client.V1Pod | None:
        pods = core.list_namespaced_pod(watched, label_selector="app.kubernetes.io/component=broker").items
        return next((p for p in pods if ready(p)), None)

    redis = wait_until(redis_ready, timeout=120, what="the managed Redis Pod Ready")
    claim = next(v.persistent_volume_claim.claim_name for v in redis.spec.volumes if v.persistent_volume_claim)
    bound = core.read_namespaced_persistent_volume_claim(claim, watched)
    assert bound.status.phase == "Bound"
    folder = Path(core.read_persistent_volume(bound.spec.volume_name).spec.host_path.path)
    wait_until(lambda: (folder / "appendonlydir").is_dir(), timeout=30, what="Redis's append-only file on the PV")

    def broker_ready() -> dict[str, Any] | None:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, watched, PLURAL, "media")
        found = condition(body, "BrokerReady")
        return found if found and found["status"] == "True" else None

    broker = wait_until(broker_ready, timeout=120, what="BrokerReady True")
    assert broker["reason"] == "RedisReady", broker
