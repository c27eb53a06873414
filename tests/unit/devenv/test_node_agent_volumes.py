"""The node agent's volume files, the mounter's path walking and the local-path provisioner's decisions."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from jobqueue_devenv.nodeagent import mounter, network, storage, volumes

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "shop",
        "uid": "u-1",
        "labels": {"app": "web", "tier": 'front "end"'},
        "annotations": {},
    },
    "spec": {"nodeName": "n", "serviceAccountName": "robot"},
}


def test_configmap_files_are_every_key_or_the_listed_items_with_their_modes() -> None:
    data = {"a": b"1", "b": b"2"}
    assert volumes.keyed_files("configmap", "cm", data, {}, 0o644) == {"a": (b"1", 0o644), "b": (b"2", 0o644)}
    items = {"items": [{"key": "b", "path": "dir/b.txt", "mode": 0o400}]}
    assert volumes.keyed_files("configmap", "cm", data, items, 0o644) == {"dir/b.txt": (b"2", 0o400)}


def test_a_missing_source_or_key_fails_unless_optional() -> None:
    with pytest.raises(volumes.VolumeError, match='secret "s" not found'):
        volumes.keyed_files("secret", "s", None, {}, 0o644)
    assert volumes.keyed_files("secret", "s", None, {"optional": True}, 0o644) == {}
    with pytest.raises(volumes.VolumeError, match="no key 'x'"):
        volumes.keyed_files("secret", "s", {}, {"items": [{"key": "x", "path": "x"}]}, 0o644)


def test_paths_must_stay_inside_the_volume() -> None:
    with pytest.raises(volumes.VolumeError, match="must be relative"):
        volumes.keyed_files("configmap", "cm", {"k": b""}, {"items": [{"key": "k", "path": "../etc/passwd"}]}, 0o644)


def test_downward_api_writes_labels_as_quoted_lines_and_simple_fields() -> None:
    items = [
        {"path": "labels", "fieldRef": {"fieldPath": "metadata.labels"}},
        {"path": "ns", "fieldRef": {"fieldPath": "metadata.namespace"}, "mode": 0o600},
    ]
    files = volumes.downward_files(POD, items, 0o644)
    assert files["labels"] == (b'app="web"\ntier="front \\"end\\""\n', 0o644)
    assert files["ns"] == (b"shop", 0o600)


def test_projected_service_account_volume_has_token_ca_and_namespace() -> None:
    requests: list[tuple[str, int]] = []

    def token(audience: str, seconds: int) -> str:
        requests.append((audience, seconds))
        return "tkn"

    projected = {
        "defaultMode": 0o644,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
        ],
    }
    files = volumes.projected_files(POD, projected, lambda _: None, lambda _: {"ca.crt": b"PEM"}, token)
    assert files == {"token": (b"tkn", 0o644), "ca.crt": (b"PEM", 0o644), "namespace": (b"shop", 0o644)}
    assert requests == [("", 3607)]


def test_files_are_switched_atomically_and_stale_keys_disappear(tmp_path: Path) -> None:
    folder = tmp_path / "vol"
    assert volumes.write_files(folder, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})
    assert (folder / "a").read_bytes() == b"1"
    assert stat.S_IMODE((folder / "d" / "b").stat().st_mode) == 0o600
    assert os.readlink(folder / "a") == "..data/a"
    first = os.readlink(folder / volumes.DATA_LINK)
    assert not volumes.write_files(folder, {"a": (b"1", 0o644), "d/b": (b"2", 0o600)})  # unchanged: untouched
    assert volumes.write_files(folder, {"a": (b"3", 0o644)})
    assert (folder / "a").read_bytes() == b"3"
    assert not (folder / "d").exists()
    assert not (folder / first).exists()  # the old generation is gone


class FakeSources:
    def __init__(self) -> None:
        self.tokens = 0

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return None

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        return {"ca.crt": b"PEM"}

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        return {"spec": {}, "status": {"phase": "Pending"}} if name == "pending" else None

    def persistent_volume(self, name: str) -> dict[str, Any] | None:
        return None

    def token(self, namespace: str, service_account: str, audience: str, seconds: int, pod: str, uid: str) -> str:
        assert (namespace, service_account, pod, uid) == ("shop", "robot", "web-1", "u-1")
        self.tokens += 1
        return f"token-{self.tokens}"


def test_tokens_are_renewed_after_80_percent_of_their_lifetime(tmp_path: Path) -> None:
    now = [1000.0]
    projected = {"sources": [{"serviceAccountToken": {"expirationSeconds": 600, "path": "token"}}]}
    pod = dict(POD, spec=dict(POD["spec"], volumes=[{"name": "api", "projected": projected}]))
    sources = FakeSources()
    pod_volumes = volumes.PodVolumes(pod, tmp_path, sources, clock=lambda: now[0])
    pod_volumes.prepare()
    token = tmp_path / "volumes" / "api" / "token"
    assert token.read_text() == "token-1"
    now[0] += 0.8 * 600 - 1
    pod_volumes.refresh()
    assert token.read_text() == "token-1"
    now[0] += 2
    pod_volumes.refresh()
    assert token.read_text() == "token-2"


@pytest.mark.parametrize(
    ("mode", "is_dir", "read_only", "expected"),
    [
        (0o777, True, False, 0o2777),  # an emptyDir: setgid, so what Redis makes there is the fsGroup's
        (0o755, True, False, 0o2775),
        (0o600, False, False, 0o660),  # a file the previous Pod's user made: its group may write it
        (0o600, False, True, 0o640),
        (0o700, True, True, 0o2750),
    ],
)
def test_fs_group_gives_the_group_access_as_the_kubelet_does(
    mode: int, is_dir: bool, read_only: bool, expected: int
) -> None:
    assert volumes.fs_group_mode(mode, is_dir, read_only) == expected


def test_an_empty_dir_belongs_to_the_pods_fs_group(tmp_path: Path) -> None:
    spec = dict(POD["spec"], securityContext={"fsGroup": 4321}, volumes=[{"name": "data", "emptyDir": {}}])
    volumes.PodVolumes(dict(POD, spec=spec), tmp_path, FakeSources()).prepare()
    folder = (tmp_path / "volumes" / "data").stat()
    assert folder.st_gid == 4321
    assert stat.S_IMODE(folder.st_mode) == 0o2777


def test_an_unbound_or_missing_claim_keeps_the_pod_waiting(tmp_path: Path) -> None:
    for claim, message in (("pending", "is not bound yet"), ("nope", "not found")):
        pod = dict(POD, spec=dict(POD["spec"], volumes=[{"name": "d", "persistentVolumeClaim": {"claimName": claim}}]))
        with pytest.raises(volumes.VolumeError, match=message):
            volumes.PodVolumes(pod, tmp_path, FakeSources()).prepare()


def test_container_plan_maps_mounts_sub_paths_and_read_only(tmp_path: Path) -> None:
    pod_volumes_spec = [{"name": "scratch", "emptyDir": {}}, {"name": "cm", "configMap": {"name": "x"}}]
    pod = dict(POD, spec=dict(POD["spec"], volumes=pod_volumes_spec))
    pod_volumes = volumes.PodVolumes(pod, tmp_path, FakeSources())
    pod_volumes.prepare()
    container = {
        "name": "main",
        "workingDir": "/data",
        "volumeMounts": [
            {"name": "scratch", "mountPath": "/data", "subPathExpr": "$(POD)"},
            {"name": "cm", "mountPath": "/etc/x"},
        ],
    }
    plan = pod_volumes.container_plan(container, {"POD": "web-1"})
    assert plan["mounts"] == [
        {"source": str(tmp_path / "volumes" / "scratch" / "web-1"), "target": "/data", "readOnly": False},
        {"source": str(tmp_path / "volumes" / "cm"), "target": "/etc/x", "readOnly": True},
    ]
    assert (tmp_path / "volumes" / "scratch" / "web-1").is_dir()
    assert plan["workingDir"] == "/data"
    assert Path(plan["staging"]).is_dir()
    assert volumes.needs_mounter(container)
    assert not volumes.needs_mounter({"name": "plain", "workingDir": "/"})


def test_host_path_types_are_checked_and_or_create_creates(tmp_path: Path) -> None:
    made = tmp_path / "made" / "here"
    assert volumes.host_path(str(made), "DirectoryOrCreate") == str(made)
    assert made.is_dir()
    with pytest.raises(volumes.VolumeError, match="is not a File"):
        volumes.host_path(str(made), "File")
    with pytest.raises(volumes.VolumeError, match="does not exist"):
        volumes.host_path(str(tmp_path / "absent"), "")


def test_mounter_resolves_symlinks_inside_its_root_and_reports_what_is_missing(tmp_path: Path) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "var").mkdir()
    (tmp_path / "var" / "run").symlink_to("/run")  # absolute: resolved inside the root, not on the host
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "file").write_text("")
    root = str(tmp_path)
    assert mounter.resolve(root, "/var/run/secrets/kubernetes.io") == ("/run", ["secrets", "kubernetes.io"])
    assert mounter.resolve(root, "/etc") == ("/etc", [])
    assert mounter.resolve(root, "/data/x") == ("/", ["data", "x"])
    assert mounter.resolve(root, "/etc/../run/./a") == ("/run", ["a"])
    with pytest.raises(NotADirectoryError):
        mounter.resolve(root, "/etc/file/below")
    assert mounter.host_path(root, "/run") == f"{root}/run"
    assert mounter.host_path("/", "/run") == "/run"


def test_mounter_orders_and_nests_paths() -> None:
    assert sorted(["/a/b/c", "/a", "/a/b"], key=mounter.depth) == ["/a", "/a/b", "/a/b/c"]
    assert mounter.under("/tmp/x", "/tmp")
    assert mounter.under("/tmp", "/tmp")
    assert not mounter.under("/tmpfoo", "/tmp")
    assert mounter.under("/anything", "/")


def test_the_kubernetes_service_address_of_every_block_is_in_the_certificate_list() -> None:
    addresses = network.kubernetes_service_addresses()
    assert len(addresses) == network.BLOCKS
    assert addresses[3] == network.Block(3).address(network.KUBERNETES_SERVICE)


CLASS = storage.storage_class()


def claim(**annotations: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "data-redis-0", "namespace": "shop", "uid": "c-1", "annotations": annotations},
        "spec": {"storageClassName": "local-path", "resources": {"requests": {"storage": "2Gi"}}},
        "status": {"phase": "Pending"},
    }


def test_wait_for_first_consumer_claims_are_provisioned_once_the_scheduler_picked_a_node() -> None:
    assert CLASS["volumeBindingMode"] == "WaitForFirstConsumer"
    assert not storage.should_provision(claim(), CLASS)
    assert storage.should_provision(claim(**{storage.SELECTED_NODE: "jobqueue-local-2"}), CLASS)
    assert storage.should_provision(claim(), dict(CLASS, volumeBindingMode="Immediate"))
    assert not storage.should_provision(claim(), dict(CLASS, provisioner="someone.else/x"))
    bound = claim(**{storage.SELECTED_NODE: "jobqueue-local"})
    bound["spec"]["volumeName"] = "pvc-c-1"
    assert not storage.should_provision(bound, CLASS)


def test_the_volume_is_a_pre_bound_host_path_with_the_class_reclaim_policy(tmp_path: Path) -> None:
    volume = storage.persistent_volume(claim(), CLASS, tmp_path / "pvc-c-1")
    assert volume["metadata"]["name"] == "pvc-c-1"
    assert volume["spec"]["claimRef"]["uid"] == "c-1"
    assert volume["spec"]["capacity"] == {"storage": "2Gi"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Delete"
    assert volume["spec"]["hostPath"]["path"] == str(tmp_path / "pvc-c-1")
    assert "nodeAffinity" not in volume["spec"], "a network disk: usable on every node"


def test_only_our_released_volumes_with_reclaim_delete_are_deleted() -> None:
    ours = {
        "metadata": {"annotations": {storage.PROVISIONED_BY: storage.PROVISIONER}},
        "spec": {"persistentVolumeReclaimPolicy": "Delete"},
        "status": {"phase": "Released"},
    }
    assert storage.should_delete(ours)
    assert not storage.should_delete(dict(ours, status={"phase": "Bound"}))
    assert not storage.should_delete(dict(ours, spec={"persistentVolumeReclaimPolicy": "Retain"}))
    assert not storage.should_delete(dict(ours, metadata={"annotations": {}}))
