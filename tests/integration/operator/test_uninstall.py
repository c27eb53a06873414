"""Uninstalling in the obvious order is safe: the operator puts no finalizer on a JobQueue, so with the
operator gone (`helm uninstall` first) `kubectl delete jq` returns at once and the garbage collector
removes the children; a JobQueue that still carries the finalizer of an older operator loses it."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, VERSION, get_jobqueue

pytestmark = pytest.mark.usefixtures("crd")

OLD_FINALIZER = "jobqueue.dev/finalizer"


def _jobqueue(name: str, finalizers: list[str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if finalizers:
        metadata["finalizers"] = finalizers
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": metadata,
        "spec": {
            "image": HOST_PROCESS_IMAGE,
            "app": "jobqueue_worker.demo:app",
            "queues": [{"name": "q", "replicas": 1}],
        },
    }


def test_with_the_operator_gone_a_jobqueue_deletes_at_once_and_its_children_follow(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    namespace: str,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_jobqueue("gone")))
    with host_operator(
        local_cluster.kubeconfig, namespace, tmp_path / "operator.log", cluster_dir=local_cluster.directory
    ):
        wait_until(lambda: condition(get_jobqueue(custom, namespace, "gone"), "Ready"), timeout=60, what="a status")
        wait_until(lambda: apps.list_namespaced_deployment(namespace).items, timeout=30, what="the workers")
        assert not get_jobqueue(custom, namespace, "gone")["metadata"].get("finalizers")
    # The operator is stopped (as after `helm uninstall`): deleting the JobQueue does not wait for it.
    started = time.monotonic()
    kubectl("delete", "jq", "-n", namespace, "gone", "--wait=true", "--timeout=30s")
    assert time.monotonic() - started < 15
    wait_until(lambda: not apps.list_namespaced_deployment(namespace).items, timeout=60, what="children collected")
    wait_until(lambda: not apps.list_namespaced_stateful_set(namespace).items, timeout=60, what="Redis collected")


def test_the_finalizer_of_an_older_operator_is_removed(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    namespace: str,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_jobqueue("older", [OLD_FINALIZER])))
    assert get_jobqueue(custom, namespace, "older")["metadata"]["finalizers"] == [OLD_FINALIZER]
    with host_operator(
        local_cluster.kubeconfig, namespace, tmp_path / "operator.log", cluster_dir=local_cluster.directory
    ):
        wait_until(
            lambda: not get_jobqueue(custom, namespace, "older")["metadata"].get("finalizers"),
            timeout=30,
            what="the old finalizer removed",
        )
    kubectl("delete", "jq", "-n", namespace, "older", "--wait=true", "--timeout=30s")


def test_an_orphaning_delete_keeps_the_children_while_the_operator_runs(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    namespace: str,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    """`kubectl delete jq --cascade=orphan` lets the children go: the operator must not put the owner
    references back while the JobQueue is being deleted (the garbage collector would then delete them)."""
    kubectl("apply", "-n", namespace, "-f", "-", input=yaml.safe_dump(_jobqueue("kept")))
    with host_operator(
        local_cluster.kubeconfig, namespace, tmp_path / "operator.log", cluster_dir=local_cluster.directory
    ):
        wait_until(lambda: apps.list_namespaced_deployment(namespace).items, timeout=30, what="the workers")
        wait_until(lambda: apps.list_namespaced_stateful_set(namespace).items, timeout=30, what="Redis")
        kubectl("delete", "jq", "-n", namespace, "kept", "--cascade=orphan", "--wait=true", "--timeout=30s")

        def orphaned() -> bool:
            deployments = apps.list_namespaced_deployment(namespace).items
            return bool(deployments) and all(not d.metadata.owner_references for d in deployments)

        wait_until(orphaned, timeout=30, what="the workers orphaned")
        kubectl("annotate", "-n", namespace, "deployment", "--all", "checked=1")  # a child event for the operator
        assert apps.list_namespaced_deployment(namespace).items
        assert apps.list_namespaced_stateful_set(namespace).items
