"""The local cluster behaves like Kubernetes: these tests talk to the real kube-apiserver.

They cover what every later test relies on: CRDs become Established, Deployments get Pods that
the scheduler binds to the node, owners' children are garbage-collected, namespaces delete.
"""

from __future__ import annotations

import json
import uuid

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl

WIDGET_CRD = """
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: widgets.test.jobqueue.dev
spec:
  group: test.jobqueue.dev
  scope: Namespaced
  names: {plural: widgets, singular: widget, kind: Widget, shortNames: [wdg]}
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          properties:
            spec:
              type: object
              required: [size]
              properties:
                size: {type: integer, minimum: 1, maximum: 10}
"""


def _gone(read: object) -> bool:
    try:
        read()  # type: ignore[operator]
    except ApiException as exc:
        if exc.status == 404:
            return True
        raise
    return False


def test_server_reports_the_pinned_version(kubectl: Kubectl, local_cluster: cluster.ClusterState) -> None:
    from jobqueue_devenv import versions

    out = json.loads(kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == versions.K8S_VERSION
    assert out["clientVersion"]["gitVersion"] == versions.K8S_VERSION


def test_node_is_ready(core: client.CoreV1Api, local_cluster: cluster.ClusterState) -> None:
    node = core.read_node(local_cluster.node_name)
    ready = {c.type: c.status for c in node.status.conditions}
    assert ready["Ready"] == "True"
    assert node.metadata.labels["kubernetes.io/hostname"] == local_cluster.node_name


def test_crd_becomes_established_and_is_enforced(kubectl: Kubectl, namespace: str) -> None:
    kubectl("apply", "-f", "-", input=WIDGET_CRD)
    try:
        kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/widgets.test.jobqueue.dev")
        good = "apiVersion: test.jobqueue.dev/v1\nkind: Widget\nmetadata: {name: w1}\nspec: {size: 3}\n"
        kubectl("apply", "-n", namespace, "-f", "-", input=good)
        assert kubectl("get", "wdg", "w1", "-n", namespace, "-o", "jsonpath={.spec.size}").stdout == "3"
        bad = good.replace("size: 3", "size: 99").replace("w1", "w2")
        refused = kubectl("apply", "-n", namespace, "-f", "-", input=bad, check=False)
        assert refused.returncode != 0
        assert "spec.size" in refused.stderr
    finally:
        kubectl("delete", "crd", "widgets.test.jobqueue.dev", "--wait=false")


def _deployment(name: str, replicas: int) -> dict[str, object]:
    labels = {"app": name}
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {"containers": [{"name": "main", "image": "example.invalid/none:1", "command": ["true"]}]},
            },
        },
    }


def test_deployment_pods_are_created_and_scheduled(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    apps.create_namespaced_deployment(namespace, _deployment("web", 3))

    def bound_pods() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector="app=web").items
        bound = [p for p in pods if p.spec.node_name == local_cluster.node_name]
        return bound if len(bound) == 3 else None

    pods = wait_until(bound_pods, timeout=30, what="3 pods bound to the node")
    owners = {p.metadata.owner_references[0].kind for p in pods}
    assert owners == {"ReplicaSet"}, "pods are created by the controller-manager through a ReplicaSet"
    for pod in pods:
        scheduled = {c.type: c.status for c in pod.status.conditions}
        assert scheduled.get("PodScheduled") == "True"


def test_deleting_an_owner_garbage_collects_its_children(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str
) -> None:
    owner = core.create_namespaced_config_map(namespace, {"metadata": {"name": "owner"}})
    reference = {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner.metadata.uid}
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "child", "ownerReferences": [reference]}})
    apps.create_namespaced_deployment(namespace, _deployment("gc", 2))
    wait_until(
        lambda: len(core.list_namespaced_pod(namespace, label_selector="app=gc").items) == 2,
        timeout=30,
        what="2 pods of deployment gc",
    )

    core.delete_namespaced_config_map("owner", namespace)
    apps.delete_namespaced_deployment("gc", namespace)  # background propagation, the default

    wait_until(
        lambda: _gone(lambda: core.read_namespaced_config_map("child", namespace)),
        timeout=30,
        what="child ConfigMap collected",
    )
    wait_until(
        lambda: not apps.list_namespaced_replica_set(namespace, label_selector="app=gc").items,
        timeout=30,
        what="ReplicaSet collected",
    )
    wait_until(
        lambda: not core.list_namespaced_pod(namespace, label_selector="app=gc").items,
        timeout=30,
        what="Pods collected",
    )


def test_deleting_a_namespace_removes_it_and_its_contents(apps: client.AppsV1Api, core: client.CoreV1Api) -> None:
    name = f"t-ns-delete-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=30, what="default SA")
    core.create_namespaced_config_map(name, {"metadata": {"name": "data"}})
    apps.create_namespaced_deployment(name, _deployment("app", 1))
    wait_until(lambda: core.list_namespaced_pod(name).items, timeout=30, what="a pod in the namespace")

    core.delete_namespace(name)

    wait_until(lambda: _gone(lambda: core.read_namespace(name)), timeout=60, what=f"namespace {name} gone")


@pytest.mark.parametrize("resource", ["pods", "deployments.apps", "jobs.batch", "leases.coordination.k8s.io"])
def test_core_apis_are_served(kubectl: Kubectl, resource: str) -> None:
    assert kubectl("get", resource, "-A", "-o", "name").returncode == 0
