"""Volumes and storage of the node agent, against the session's real local cluster.

ConfigMap, Secret, downwardAPI and emptyDir files; the ServiceAccount token that the admission plugin
injects (an in-cluster client authenticates with it, and RBAC decides); and the local-path
provisioner behind a StatefulSet's volumeClaimTemplate.
"""

from __future__ import annotations

import sys
import textwrap
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.nodeagent import cleanup, logs, storage, volumes
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.waiting import wait_until
from tests.integration.devenv.test_node_agent import finished_pod


def log_of(state: cluster.ClusterState, pod: client.V1Pod, container: str = "main") -> str:
    meta = pod.metadata
    folder = cleanup.agent_folder(Path(state.directory)) / "pods" / f"{meta.namespace}_{meta.name}_{meta.uid}"
    return logs.read_all(folder, container)


def shell_pod(name: str, script: str, **spec: Any) -> dict[str, Any]:
    mounts = spec.pop("volumeMounts", [])
    return {
        "metadata": {"name": name, "labels": {"app": name, "tier": "test"}},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": HOST_PROCESS_IMAGE,
                    "command": ["sh", "-c", textwrap.dedent(script)],
                    "volumeMounts": mounts,
                }
            ],
            **spec,
        },
    }


def test_configmap_secret_downward_api_and_empty_dir_files(
    core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"greeting": "hello"}})
    core.create_namespaced_secret(
        namespace, {"metadata": {"name": "creds"}, "stringData": {"password": "s3cret", "user": "ann"}}
    )
    # Top-level paths that do not exist on the host: the agent must not create them there.
    top = f"/jq-volume-test-{uuid.uuid4().hex[:8]}"
    script = f"""
        echo "greeting=$(cat /etc/jq-settings/greeting)"
        echo "password=$(cat {top}/creds/pw)"
        echo "mode=$(stat -L -c %a {top}/creds/pw)"
        echo "defaultMode=$(stat -L -c %a /creds-mode/user)"
        ls {top}/creds
        cat /podinfo/labels
        echo "namespace=$(cat /podinfo/namespace)"
        touch /etc/jq-settings/new 2>/dev/null && echo "configmap writable" || echo "configmap read-only"
        echo shared > /scratch/file && echo "scratch=$(cat /scratch/file)"
    """
    core.create_namespaced_pod(
        namespace,
        shell_pod(
            "reader",
            script,
            volumes=[
                {"name": "settings", "configMap": {"name": "settings"}},
                {"name": "creds", "secret": {"secretName": "creds", "items": [{"key": "password", "path": "pw"}]}},
                {"name": "creds-mode", "secret": {"secretName": "creds", "defaultMode": 0o400}},
                {
                    "name": "podinfo",
                    "downwardAPI": {
                        "items": [
                            {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
                            {"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}},
                        ]
                    },
                },
                {"name": "scratch", "emptyDir": {}},
            ],
            volumeMounts=[
                {"name": "settings", "mountPath": "/etc/jq-settings"},
                {"name": "creds", "mountPath": f"{top}/creds"},
                {"name": "creds-mode", "mountPath": "/creds-mode"},
                {"name": "podinfo", "mountPath": "/podinfo"},
                {"name": "scratch", "mountPath": "/scratch"},
            ],
        ),
    )
    pod = wait_until(lambda: finished_pod(core, namespace, "reader"), timeout=30, what="reader finished")
    output = log_of(local_cluster, pod)
    assert pod.status.phase == "Succeeded", output
    lines = output.splitlines()
    assert "greeting=hello" in lines
    assert "password=s3cret" in lines
    assert "mode=644" in lines  # the kubelet's default mode, 0644
    assert "defaultMode=400" in lines
    assert "user" not in lines  # only the listed item
    assert 'app="reader"' in lines
    assert 'tier="test"' in lines
    assert f"namespace={namespace}" in lines
    assert "configmap read-only" in lines
    assert "scratch=shared" in lines
    for path in (top, "/podinfo", "/scratch", "/creds-mode", "/etc/jq-settings"):
        assert not Path(path).exists(), f"{path} was created on the host"


def test_default_service_account_lists_its_namespace_and_rbac_refuses_another(
    core: client.CoreV1Api, api_client: client.ApiClient, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    rbac = client.RbacAuthorizationV1Api(api_client)
    rbac.create_namespaced_role(
        namespace,
        {"metadata": {"name": "pod-reader"}, "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]},
    )
    rbac.create_namespaced_role_binding(
        namespace,
        {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "default", "namespace": namespace}],
        },
    )
    program = textwrap.dedent(
        f"""
        from kubernetes import client, config
        config.load_incluster_config()
        api = client.CoreV1Api()
        print("mine", sorted(p.metadata.name for p in api.list_namespaced_pod({namespace!r}).items), flush=True)
        try:
            api.list_namespaced_pod("kube-system")
            print("other allowed")
        except client.ApiException as exc:
            print("other refused", exc.status)
        """
    )
    core.create_namespaced_pod(
        namespace,
        {
            "metadata": {"name": "lister"},
            "spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": HOST_PROCESS_IMAGE, "command": ["python", "-c", program]}],
            },
        },
    )
    pod = wait_until(lambda: finished_pod(core, namespace, "lister"), timeout=30, what="lister finished")
    output = log_of(local_cluster, pod)
    assert pod.status.phase == "Succeeded", output
    # The ServiceAccount admission plugin injected kube-api-access-*; the agent filled it in.
    assert any(v.name.startswith("kube-api-access-") and v.projected for v in pod.spec.volumes)
    assert "mine ['lister']" in output.splitlines()
    assert "other refused 403" in output.splitlines()


def statefulset(name: str) -> dict[str, Any]:
    script = 'cat /data/log 2>/dev/null; echo "written by $POD_UID" >> /data/log; exec sleep 3600'
    return {
        "metadata": {"name": name},
        "spec": {
            "serviceName": name,
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {
                    "terminationGracePeriodSeconds": 2,
                    "containers": [
                        {
                            "name": "main",
                            "image": HOST_PROCESS_IMAGE,
                            "command": ["sh", "-c", script],
                            "env": [{"name": "POD_UID", "valueFrom": {"fieldRef": {"fieldPath": "metadata.uid"}}}],
                            "volumeMounts": [{"name": "data", "mountPath": "/data"}],
                        }
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
                }
            ],
        },
    }


def running_pod(core: client.CoreV1Api, namespace: str, name: str, not_uid: str = "") -> client.V1Pod | None:
    try:
        pod = core.read_namespaced_pod(name, namespace)
    except client.ApiException:
        return None
    if pod.metadata.uid == not_uid or pod.status.phase != "Running" or pod.metadata.deletion_timestamp:
        return None
    return pod


def test_statefulset_claim_is_provisioned_kept_across_pods_and_deleted_with_its_claim(
    core: client.CoreV1Api, apps: client.AppsV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    default = client.StorageV1Api(core.api_client).read_storage_class(storage.CLASS_NAME)
    assert default.metadata.annotations[storage.DEFAULT_CLASS] == "true"
    apps.create_namespaced_stateful_set(namespace, statefulset("keeper"))
    first = wait_until(lambda: running_pod(core, namespace, "keeper-0"), timeout=60, what="keeper-0 running")
    claim = core.read_namespaced_persistent_volume_claim("data-keeper-0", namespace)
    assert claim.status.phase == "Bound"
    assert claim.spec.storage_class_name == storage.CLASS_NAME  # the default class, set by admission
    volume = core.read_persistent_volume(claim.spec.volume_name)
    folder = Path(volume.spec.host_path.path)
    assert folder.is_relative_to(Path(local_cluster.directory))
    wait_until(lambda: (folder / "log").is_file(), timeout=30, what="the first pod wrote its file")

    core.delete_namespaced_pod("keeper-0", namespace)
    second = wait_until(
        lambda: running_pod(core, namespace, "keeper-0", not_uid=first.metadata.uid),
        timeout=60,
        what="a new keeper-0 running",
    )
    wait_until(lambda: second.metadata.uid in (folder / "log").read_text(), timeout=30, what="second write")
    assert log_of(local_cluster, second).splitlines()[0] == f"written by {first.metadata.uid}"

    apps.delete_namespaced_stateful_set("keeper", namespace)
    wait_until(lambda: running_pod(core, namespace, "keeper-0") is None, timeout=30, what="keeper-0 gone")
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, what="no pods left")
    core.delete_namespaced_persistent_volume_claim("data-keeper-0", namespace)
    wait_until(lambda: not folder.exists(), timeout=30, what="the volume's folder removed")

    def volume_gone() -> bool:
        try:
            core.read_persistent_volume(volume.metadata.name)
        except client.ApiException as exc:
            return exc.status == 404
        return False

    wait_until(volume_gone, timeout=30, what="the PersistentVolume deleted")


def test_a_volume_over_an_ancestor_of_the_checkout_keeps_the_virtualenv_and_the_repository(
    core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    """The chart's emptyDir at /tmp must not hide `jobqueue-operator` when the checkout lives under /tmp."""
    ancestor = volumes.REPOSITORY.parent
    script = f"""
        ls {ancestor} | wc -l | sed 's/^/entries=/'
        echo "python=$(python -c 'import sys; print(sys.prefix)')"
        test -f {volumes.REPOSITORY / "pyproject.toml"} && echo "repository visible"
    """
    core.create_namespaced_pod(
        namespace,
        shell_pod(
            "covered",
            script,
            volumes=[{"name": "cover", "emptyDir": {}}],
            volumeMounts=[{"name": "cover", "mountPath": str(ancestor)}],
        ),
    )
    pod = wait_until(lambda: finished_pod(core, namespace, "covered"), timeout=30, what="covered finished")
    output = log_of(local_cluster, pod)
    assert pod.status.phase == "Succeeded", output
    lines = output.splitlines()
    kept = {Path(k).relative_to(ancestor).parts[0] for k in volumes.kept_folders() if Path(k).is_relative_to(ancestor)}
    assert f"entries={len(kept)}" in lines  # the emptyDir, with only the checkout (and venv) bound back into it
    assert f"python={sys.prefix}" in lines
    assert "repository visible" in lines
