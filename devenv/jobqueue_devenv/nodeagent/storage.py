"""A tiny provisioner of "network disks": the default StorageClass `local-path` and a hostPath PV per claim.

It runs in the cluster's `cloud` process, not in a node agent, so exactly one acts and it keeps working
whichever node dies. It creates the StorageClass at start-up (default class, `volumeBindingMode:
WaitForFirstConsumer`, `reclaimPolicy: Delete`), follows PersistentVolumeClaims and PersistentVolumes (two
informers), and:

- provisions a claim of a class whose provisioner is `PROVISIONER` once it may: at once for an
  `Immediate` class, after the scheduler picked a node (`volume.kubernetes.io/selected-node`) for a
  `WaitForFirstConsumer` one. The PV (`pvc-<claim uid>`) is a `hostPath` folder
  `<cloud folder>/storage/<pv name>` with `claimRef` set, so the controller-manager's PV controller
  binds the two at once. It has no node affinity: every node is on this machine and reads the same
  folder, so the volume behaves as a network-attached disk, and a StatefulSet's Pod whose node died can
  start on another node with its data (once its old Pod is gone);
- deletes a PV of its own that is `Released` with reclaim policy `Delete` (its claim was deleted):
  the folder first, then the PV object. A PV of its own deleted by hand loses its folder too.

Only folders under `<cloud folder>/storage/` are ever deleted.
"""

from __future__ import annotations

import logging
import shutil
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from kubernetes import client
from kubernetes.client.rest import ApiException

log = logging.getLogger("node-agent.storage")

PROVISIONER: Final = "jobqueue.dev/local-path"
CLASS_NAME: Final = "local-path"
DEFAULT_CLASS: Final = "storageclass.kubernetes.io/is-default-class"
SELECTED_NODE: Final = "volume.kubernetes.io/selected-node"
PROVISIONED_BY: Final = "pv.kubernetes.io/provisioned-by"
STORAGE_FOLDER: Final = "storage"


def storage_class() -> dict[str, Any]:
    return {
        "apiVersion": "storage.k8s.io/v1",
        "kind": "StorageClass",
        "metadata": {"name": CLASS_NAME, "annotations": {DEFAULT_CLASS: "true"}},
        "provisioner": PROVISIONER,
        "reclaimPolicy": "Delete",
        "volumeBindingMode": "WaitForFirstConsumer",
    }


def volume_name(claim: Mapping[str, Any]) -> str:
    return f"pvc-{claim['metadata']['uid']}"


def should_provision(claim: Mapping[str, Any], klass: Mapping[str, Any] | None) -> bool:
    """A pending claim of one of our classes that may be provisioned now (pure)."""
    if klass is None or klass.get("provisioner") != PROVISIONER:
        return False
    meta, spec = claim["metadata"], claim.get("spec") or {}
    if meta.get("deletionTimestamp") or spec.get("volumeName"):
        return False
    if (claim.get("status") or {}).get("phase", "Pending") != "Pending":
        return False
    if klass.get("volumeBindingMode", "Immediate") == "WaitForFirstConsumer":
        return bool((meta.get("annotations") or {}).get(SELECTED_NODE))
    return True


def persistent_volume(claim: Mapping[str, Any], klass: Mapping[str, Any], path: Path) -> dict[str, Any]:
    """The hostPath PV for `claim`, pre-bound to it, usable on every node (pure)."""
    meta, spec = claim["metadata"], claim.get("spec") or {}
    requested = ((spec.get("resources") or {}).get("requests") or {}).get("storage", "1Gi")
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolume",
        "metadata": {"name": volume_name(claim), "annotations": {PROVISIONED_BY: PROVISIONER}},
        "spec": {
            "capacity": {"storage": requested},
            "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
            "volumeMode": spec.get("volumeMode") or "Filesystem",
            "persistentVolumeReclaimPolicy": klass.get("reclaimPolicy") or "Delete",
            "storageClassName": klass["metadata"]["name"],
            "claimRef": {
                "apiVersion": "v1",
                "kind": "PersistentVolumeClaim",
                "namespace": meta["namespace"],
                "name": meta["name"],
                "uid": meta["uid"],
            },
            "hostPath": {"path": str(path), "type": "DirectoryOrCreate"},
        },
    }


def should_delete(volume: Mapping[str, Any]) -> bool:
    """One of our PVs whose claim is gone, to be deleted (pure)."""
    annotations = (volume.get("metadata") or {}).get("annotations") or {}
    spec, phase = volume.get("spec") or {}, (volume.get("status") or {}).get("phase")
    return (
        annotations.get(PROVISIONED_BY) == PROVISIONER
        and spec.get("persistentVolumeReclaimPolicy") == "Delete"
        and phase in ("Released", "Failed")
    )


class Provisioner:
    def __init__(self, api_client: client.ApiClient, folder: Path) -> None:
        self.core = client.CoreV1Api(api_client)
        self.storage = client.StorageV1Api(api_client)
        self.root = (folder / STORAGE_FOLDER).resolve()
        self.lock = threading.Lock()
        self.claims: dict[str, dict[str, Any]] = {}
        self.volumes: dict[str, dict[str, Any]] = {}

    def ensure_class(self) -> None:
        try:
            self.storage.create_storage_class(storage_class())
            log.info("created the default StorageClass %s", CLASS_NAME)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def folder_of(self, volume: Mapping[str, Any]) -> Path | None:
        """The PV's folder, if it is one of ours under the storage folder."""
        path = ((volume.get("spec") or {}).get("hostPath") or {}).get("path")
        if not path:
            return None
        resolved = Path(path).resolve()
        return resolved if resolved.parent == self.root else None

    # Informer callbacks -------------------------------------------------------------------------------

    def on_claim(self, kind: str, claim: dict[str, Any]) -> None:
        uid = claim["metadata"]["uid"]
        with self.lock:
            if kind == "DELETED":
                self.claims.pop(uid, None)
                return
            self.claims[uid] = claim
        self._provision(claim)

    def on_volume(self, kind: str, volume: dict[str, Any]) -> None:
        name = volume["metadata"]["name"]
        with self.lock:
            if kind == "DELETED":
                self.volumes.pop(name, None)
            else:
                self.volumes[name] = volume
        if kind == "DELETED":
            if (volume["metadata"].get("annotations") or {}).get(PROVISIONED_BY) == PROVISIONER:
                self._remove_folder(volume)
        elif should_delete(volume):
            self._delete(volume)

    def resync(self) -> None:
        """Retry what an API error interrupted."""
        with self.lock:
            claims, volumes = list(self.claims.values()), list(self.volumes.values())
        for claim in claims:
            self._provision(claim)
        for volume in volumes:
            if should_delete(volume):
                self._delete(volume)

    # Work ---------------------------------------------------------------------------------------------

    def _class_of(self, claim: Mapping[str, Any]) -> dict[str, Any] | None:
        name = (claim.get("spec") or {}).get("storageClassName")
        if not name:
            return None
        try:
            return dict(self.storage.api_client.sanitize_for_serialization(self.storage.read_storage_class(name)))
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _provision(self, claim: Mapping[str, Any]) -> None:
        if (claim.get("spec") or {}).get("volumeName"):
            return
        klass = self._class_of(claim)
        if not should_provision(claim, klass):
            return
        assert klass is not None
        name = volume_name(claim)
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        path.chmod(0o777)  # like local-path-provisioner: any user of the Pod can write
        try:
            self.core.create_persistent_volume(persistent_volume(claim, klass, path))
            meta = claim["metadata"]
            log.info("provisioned %s for claim %s/%s in %s", name, meta["namespace"], meta["name"], path)
        except ApiException as exc:
            if exc.status != 409:
                raise

    def _delete(self, volume: Mapping[str, Any]) -> None:
        self._remove_folder(volume)
        name = volume["metadata"]["name"]
        try:
            self.core.delete_persistent_volume(name)
            log.info("deleted %s (its claim is gone)", name)
        except ApiException as exc:
            if exc.status != 404:
                raise

    def _remove_folder(self, volume: Mapping[str, Any]) -> None:
        folder = self.folder_of(volume)
        if folder is not None and folder.exists():
            shutil.rmtree(folder, ignore_errors=True)
            log.info("removed %s", folder)
