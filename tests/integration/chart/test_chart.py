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


def test_operator_deployment_is_two_hardened_replicas_spread_over_nodes() -> None:
    documents = render()
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    assert spec["strategy"] == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = spec["template"]["spec"]
    selector = spec["selector"]["matchLabels"]
    (spread,) = pod["topologySpreadConstraints"]
    assert (spread["topologyKey"], spread["whenUnsatisfiable"]) == ("kubernetes.io/hostname", "ScheduleAnyway")
    assert spread["labelSelector"]["matchLabels"] == selector
    anti = pod["affinity"]["podAntiAffinity"]
    assert "requiredDuringSchedulingIgnoredDuringExecution" not in anti  # a one-node cluster runs both
    (preferred,) = anti["preferredDuringSchedulingIgnoredDuringExecution"]
    assert preferred["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
    (budget,) = [d for d in documents if d["kind"] == "PodDisruptionBudget"]
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in pod["containers"][0]["env"]}
    assert env["JOBQUEUE_LEASE_NAME"] == "jq-jobqueue-operator"  # one Lease per release
    assert env["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}
    assert pod["securityContext"]["runAsNonRoot"] is True
    container = pod["containers"][0]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert "--all-namespaces" in container["args"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"


def test_one_replica_has_no_disruption_budget_and_may_do_without_an_election() -> None:
    assert not [d for d in render("replicas=1") if d["kind"] == "PodDisruptionBudget"]
    documents = render("replicas=1", "leaderElection.enabled=false")
    assert not [d for d in documents if "leader-election" in d["metadata"]["name"]]
    (deployment,) = [d for d in documents if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JOBQUEUE_LEADER_ELECTION"] == "false"


def test_two_replicas_without_an_election_are_refused() -> None:
    refused = helm("template", "jq", str(CHART), "--set", "leaderElection.enabled=false", check=False)
    assert refused.returncode != 0
    assert "replicas > 1 needs leaderElection.enabled" in refused.stderr


def test_cluster_wide_rbac() -> None:
    kinds = sorted(d["kind"] for d in render() if "rbac" in d["apiVersion"])
    assert kinds == [*["ClusterRole"] * 3, *["ClusterRoleBinding"] * 3, "Role", "Role", "RoleBinding", "RoleBinding"]


def test_the_nodes_and_the_kubelets_leases_are_only_read() -> None:
    """A lost node's workers: the operator reads the Nodes and, in kube-node-lease only, their Leases."""
    for sets in ((), ("watch.namespaces={apps}",)):
        documents = {(d["kind"], d["metadata"]["name"]): d for d in render(*sets) if "rbac" in d["apiVersion"]}
        nodes = documents[("ClusterRole", "jq-jobqueue-operator-nodes")]
        assert nodes["rules"] == [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get", "list", "watch"]}]
        leases = documents[("Role", "jq-jobqueue-operator-node-leases")]
        assert leases["metadata"]["namespace"] == "kube-node-lease"
        assert leases["rules"] == [
            {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "list"]}
        ]
        binding = documents[("RoleBinding", "jq-jobqueue-operator-node-leases")]
        assert binding["subjects"][0]["namespace"] == "jobqueue-system"


def test_the_node_lease_grace_reaches_the_operator() -> None:
    (deployment,) = [d for d in render("nodeLeaseGraceSeconds=30") if d["kind"] == "Deployment"]
    env = {e["name"]: e.get("value") for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["JOBQUEUE_NODE_LEASE_GRACE_SECONDS"] == "30"


def test_the_leader_election_role_reaches_only_leases_and_events_of_the_release_namespace() -> None:
    (role,) = [d for d in render() if d["kind"] == "Role" and d["metadata"]["name"].endswith("-leader-election")]
    assert (role["metadata"]["name"], role["metadata"]["namespace"]) == (
        "jq-jobqueue-operator-leader-election",
        "jobqueue-system",
    )
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]},
        {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]},
    ]


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
        ("Role", "jobqueue-system"),  # leader election's Lease
        ("RoleBinding", "jobqueue-system"),
        ("Role", "kube-node-lease"),  # the kubelets' Leases, read
        ("RoleBinding", "kube-node-lease"),
    }
    (cluster_role,) = [
        d for d in documents if d["kind"] == "ClusterRole" and d["metadata"]["name"].endswith("-framework")
    ]
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
        ("ClusterRole", "jq-jobqueue-operator-nodes"),
        ("ClusterRoleBinding", "jq-jobqueue-operator"),
        ("ClusterRoleBinding", "jq-jobqueue-operator-framework"),
        ("ClusterRoleBinding", "jq-jobqueue-operator-nodes"),
        ("Role", "jq-jobqueue-operator-leader-election"),
        ("Role", "jq-jobqueue-operator-node-leases"),
        ("RoleBinding", "jq-jobqueue-operator-leader-election"),
        ("RoleBinding", "jq-jobqueue-operator-node-leases"),
    ]
    (application,) = [
        d for d in documents if d["metadata"]["name"] == "jq-jobqueue-operator" and d["kind"] == "ClusterRole"
    ]
    assert ["jobqueues"] in [rule["resources"] for rule in application["rules"]]
    assert {  # a PodDisruptionBudget per queue's workers
        "apiGroups": ["policy"],
        "resources": ["poddisruptionbudgets"],
        "verbs": ["get", "list", "watch", "create", "patch", "update", "delete"],
    } in application["rules"]
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
        assert deployment.spec.strategy.type == "RollingUpdate"

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
        # It reads the Nodes and the kubelets' Leases (a lost node), and writes neither.
        who = f"--as=system:serviceaccount:{namespace}:{release}-jobqueue-operator"
        asked = {
            ("list", "nodes", "kube-node-lease"): "yes",
            ("list", "leases.coordination.k8s.io", "kube-node-lease"): "yes",
            ("update", "leases.coordination.k8s.io", "kube-node-lease"): "no",
            ("patch", "nodes", "kube-node-lease"): "no",
        }
        for (verb, resource, where), answer in asked.items():
            said = kubectl("auth", "can-i", verb, resource, "-n", where, who, check=False).stdout.strip()
            assert said == answer, f"can-i {verb} {resource}: {said}"
    finally:
        helm("uninstall", release, "-n", namespace, kubeconfig=kubeconfig)
        core.delete_namespace(namespace)
