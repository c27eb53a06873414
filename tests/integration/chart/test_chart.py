"""The Helm chart: lint, both RBAC modes, manifests/ in sync, and a real install into the local cluster."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.paths import CHART, CRD_FILE, REPO
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from tests.conftest import Kubectl, helm


def render(*sets: str) -> list[dict[str, Any]]:
    flags = [flag for value in sets for flag in ("--set", value)]
    output = helm("template", "jq", str(CHART), "-n", "jobqueue-system", "--kube-version", "1.36.3", *flags).stdout
    return [doc for doc in yaml.safe_load_all(output) if doc]


def test_lint() -> None:
    result = helm("lint", str(CHART), "--strict", "--kube-version", "1.36.3", check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_values_schema_refuses_a_value_out_of_range() -> None:
    result = helm("template", "jq", str(CHART), "--kube-version", "1.36.3", "--set", "resyncSeconds=0", check=False)
    assert result.returncode != 0
    assert "resyncSeconds" in result.stderr


def test_values_schema_refuses_a_misspelt_key_naming_it() -> None:
    result = helm("template", "jq", str(CHART), "--kube-version", "1.36.3", "--set", "resyncSecond=5", check=False)
    assert result.returncode != 0
    assert "resyncSecond" in result.stderr


def test_the_operator_pod_has_the_standard_labels_podlabels_and_one_health_port() -> None:
    (deployment,) = [d for d in render("podLabels.team=platform", "health.port=9090") if d["kind"] == "Deployment"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert labels["team"] == "platform"
    assert labels[naming.PART_OF_LABEL] == naming.PART_OF  # as on every child the operator makes
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "--liveness=http://0.0.0.0:9090/healthz" in container["args"]
    assert {"name": "health", "containerPort": 9090, "protocol": "TCP"} in container["ports"]


def test_operator_deployment_is_a_hardened_singleton() -> None:
    (deployment,) = [d for d in render() if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 1
    assert spec["strategy"] == {"type": "Recreate"}
    pod = spec["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--all-namespaces" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_cluster_wide_rbac() -> None:
    kinds = sorted(d["kind"] for d in render() if "rbac" in d["apiVersion"])
    assert kinds == ["ClusterRole", "ClusterRole", "ClusterRoleBinding", "ClusterRoleBinding"]


def test_single_namespace_rbac_grants_only_reads_of_crds_and_namespaces_cluster_wide() -> None:
    documents = render("watch.namespaces={apps,media}")
    roles = {(d["kind"], d["metadata"].get("namespace")) for d in documents if "rbac" in d["apiVersion"]}
    assert roles == {
        ("ClusterRole", None),
        ("ClusterRoleBinding", None),
        ("Role", "apps"),
        ("Role", "media"),
        ("RoleBinding", "apps"),
        ("RoleBinding", "media"),
    }
    (cluster_role,) = [d for d in documents if d["kind"] == "ClusterRole"]
    assert [rule["resources"] for rule in cluster_role["rules"]] == [["customresourcedefinitions"], ["namespaces"]]
    assert all(rule["verbs"] == ["get", "list", "watch"] for rule in cluster_role["rules"])
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][:2] == [
        "--namespace=apps",
        "--namespace=media",
    ]


def test_a_namespace_pattern_gets_cluster_wide_rbac_and_is_passed_to_the_operator() -> None:
    """A Role cannot live in a namespace named `e2e-*`: any pattern makes the application rules cluster-wide."""
    documents = render("watch.namespaces={apps,e2e-*}")
    roles = sorted((d["kind"], d["metadata"]["name"]) for d in documents if "rbac" in d["apiVersion"])
    assert roles == [
        ("ClusterRole", "jq-jobqueue-operator"),
        ("ClusterRole", "jq-jobqueue-operator-framework"),
        ("ClusterRoleBinding", "jq-jobqueue-operator"),
        ("ClusterRoleBinding", "jq-jobqueue-operator-framework"),
    ]
    (application,) = [
        d for d in documents if d["metadata"]["name"] == "jq-jobqueue-operator" and d["kind"] == "ClusterRole"
    ]
    assert ["jobqueues"] in [rule["resources"] for rule in application["rules"]]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    assert deployment["spec"]["template"]["spec"]["containers"][0]["args"][:2] == [
        "--namespace=apps",
        "--namespace=e2e-*",
    ]


def test_manifests_are_generated_from_the_chart() -> None:
    """manifests/ is `make manifests`' output: regenerate it when this fails."""
    assert (REPO / "manifests" / "crds" / CRD_FILE.name).read_text() == CRD_FILE.read_text()
    rendered = helm(
        "template",
        "jobqueue-operator",
        str(CHART),
        "--namespace",
        "jobqueue-system",
        "--kube-version",
        "1.36.3",
        "--include-crds",
    ).stdout
    assert (REPO / "manifests" / "install.yaml").read_text() == rendered


@pytest.mark.cluster
def test_helm_install_into_the_local_cluster(
    local_cluster: cluster.ClusterState, kubectl: Kubectl, core: client.CoreV1Api, apps: client.AppsV1Api
) -> None:
    namespace = f"jqhelm-{uuid.uuid4().hex[:6]}"
    release = f"jq-{uuid.uuid4().hex[:6]}"
    kubeconfig = local_cluster.kubeconfig
    installed = helm(
        "install", release, str(CHART), "-n", namespace, "--create-namespace", "--wait=false", kubeconfig=kubeconfig
    )
    try:
        assert "STATUS: deployed" in installed.stdout
        assert "It watches every namespace." in installed.stdout
        wait_until(lambda: kubectl("get", "jq", "-A", check=False).returncode == 0, timeout=30, what="jq served")
        deployment = apps.read_namespaced_deployment(f"{release}-jobqueue-operator", namespace)
        assert deployment.spec.strategy.type == "Recreate"

        def can_patch() -> str:
            can = kubectl(
                "auth",
                "can-i",
                "patch",
                "deployments",
                "-n",
                "default",
                f"--as=system:serviceaccount:{namespace}:{release}-jobqueue-operator",
                check=False,
            )
            return can.stdout.strip()

        # The API server authorizes from its RBAC informers: the bindings helm just created count a moment
        # later. Wait for the grant (the refusal below is then checked against the same, current rules).
        wait_until(lambda: can_patch() == "yes", timeout=15, what="the operator allowed to patch Deployments")
        # It deletes a managed Redis Pod to restart it, but makes Pods only through Deployments and StatefulSets.
        cannot = kubectl(
            "auth",
            "can-i",
            "create",
            "pods",
            "-n",
            "default",
            f"--as=system:serviceaccount:{namespace}:{release}-jobqueue-operator",
            check=False,
        )
        assert cannot.stdout.strip() == "no"
    finally:
        helm("uninstall", release, "-n", namespace, kubeconfig=kubeconfig)
        core.delete_namespace(namespace)
