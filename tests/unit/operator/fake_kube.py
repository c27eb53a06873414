"""A typed fake of `kube.KubeApi` for the unit tests of the reconcile and the tick: an in-memory API server
that records every write, applies server-side the way the tests need (replace, keep what others own)."""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobqueue_operator import kube, naming
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.events import Event


@dataclass
class FakeKube:
    objects: dict[tuple[str, str], Manifest] = field(default_factory=dict)
    """(kind, name) -> object, all in one namespace."""
    pods_by_selector: list[Manifest] = field(default_factory=list)
    secrets: dict[str, dict[str, str]] = field(default_factory=dict)
    config_maps: dict[str, dict[str, str]] = field(default_factory=dict)
    refusals: dict[str, list[Manifest]] = field(default_factory=dict)
    """StatefulSet name -> its FailedCreate Events."""
    refuse_apply: dict[tuple[str, str], str] = field(default_factory=dict)
    status: dict[str, dict[str, Any]] = field(default_factory=dict)
    """field manager -> the status it applied last."""
    events: list[tuple[str, str, str]] = field(default_factory=list)
    """(type, reason, message) of every Event posted, a Warning once per cause (its repeats: `raised`)."""
    raised: dict[str, dict[str, int]] = field(default_factory=dict)
    """reason -> cause -> count of a Warning's Event."""
    scales: list[tuple[str, int]] = field(default_factory=list)
    applies: list[Manifest] = field(default_factory=list)
    annotations: dict[str, dict[str, str]] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    version: int = 0
    node_list: list[Manifest] = field(default_factory=list)
    lease_list: list[Manifest] = field(default_factory=list)
    """The cluster's Nodes and their kubelet Leases (kube-node-lease)."""
    nodes_refused: str | None = None
    """Set: reading the nodes fails with this message (RBAC, a slow API server)."""

    def _stamp(self, obj: Manifest) -> Manifest:
        self.version += 1
        metadata = obj.setdefault("metadata", {})
        metadata["resourceVersion"] = str(self.version)
        metadata.setdefault("generation", 1)
        return obj

    def children(self, namespace: str, jobqueue: str) -> dict[kube.Key, Manifest]:
        self.calls.append("children")
        return {key: copy.deepcopy(obj) for key, obj in self.objects.items()}

    def pods(self, namespace: str, selector: str) -> list[Manifest]:
        self.calls.append("pods")
        wanted = dict(part.split("=", 1) for part in selector.split(","))
        return [p for p in self.pods_by_selector if wanted.items() <= (p["metadata"].get("labels") or {}).items()]

    def failed_create_events(self, namespace: str, kind: str, name: str) -> list[Manifest]:
        return list(self.refusals.get(name, []))

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.secrets.get(name)
        if found is None and ("Secret", name) in self.objects:
            found = self.objects[("Secret", name)].get("data", {})
        return None if found is None else dict(found)

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        found = self.config_maps.get(name)
        return None if found is None else dict(found)

    def create(self, manifest: Manifest) -> bool:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if key in self.objects:
            return False
        self.calls.append(f"create {key[0]}")
        created = copy.deepcopy(manifest)
        if "stringData" in created:  # as the API server stores it
            encoded = {k: base64.b64encode(v.encode()).decode() for k, v in created.pop("stringData").items()}
            created["data"] = {**created.get("data", {}), **encoded}
        self.objects[key] = self._stamp(created)
        return True

    def apply_many(self, manifests: Sequence[Manifest]) -> list[Manifest | kube.KubeError]:
        results: list[Manifest | kube.KubeError] = []
        for manifest in manifests:
            key = (manifest["kind"], manifest["metadata"]["name"])
            if key in self.refuse_apply:
                results.append(kube.KubeError(self.refuse_apply[key]))
                continue
            self.calls.append(f"apply {key[0]} {key[1]}")
            self.applies.append(copy.deepcopy(manifest))
            live = self.objects.get(key)
            applied = copy.deepcopy(manifest)
            if live is not None:
                replicas = (live.get("spec") or {}).get("replicas")
                if "replicas" not in applied.get("spec", {}) and replicas is not None:
                    applied["spec"]["replicas"] = replicas  # owned by another manager: kept
                changed = applied.get("spec") != live.get("spec")
                applied["metadata"]["generation"] = live["metadata"].get("generation", 1) + int(changed)
                applied["metadata"]["managedFields"] = live["metadata"].get("managedFields", [])
                applied["status"] = live.get("status", {})
            self.objects[key] = self._stamp(applied)
            results.append(copy.deepcopy(self.objects[key]))
        return results

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        self.calls.append(f"delete {kind} {name}")
        return self.objects.pop((kind, name), None) is not None

    def apply_status(self, namespace: str, name: str, status: Manifest, manager: str) -> None:
        self.calls.append(f"status {manager}")
        self.status[manager] = copy.deepcopy(status)

    def post_event(self, involved: Mapping[str, Any], event: Event) -> None:
        """A new Event, or (a Warning of a cause already posted) that Event's count raised, as `Kube` does."""
        if event.type == "Warning" and event.key in self.raised.setdefault(event.reason, {}):
            self.raised[event.reason][event.key] += 1
            return
        if event.type == "Warning":
            self.raised[event.reason][event.key] = 1
        self.events.append((event.type, event.reason, event.message))

    def worker_deployments(self, namespace: str, jobqueue: str) -> dict[str, Manifest]:
        return {
            queue: copy.deepcopy(obj)
            for (kind, _), obj in self.objects.items()
            if kind == "Deployment" and (queue := naming.queue_of(obj["metadata"]))
        }

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.calls.append(f"annotate {name}")
        self.annotations.setdefault(name, {}).update(annotations)

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls.append(f"scale {name} {replicas}")
        self.scales.append((name, replicas))
        live = self.objects[("Deployment", name)]
        live["spec"]["replicas"] = replicas
        fields = {"manager": naming.AUTOSCALER_FIELD_MANAGER, "fieldsV1": {"f:spec": {"f:replicas": {}}}}
        managed = live["metadata"].setdefault("managedFields", [])
        if fields not in managed:
            managed.append(fields)

    def write_secret_key(self, namespace: str, name: str, key: str, value: str) -> None:
        self.calls.append(f"write Secret {name} {key}")
        self.secrets.setdefault(name, dict(self.secret_data(namespace, name) or {}))[key] = base64.b64encode(
            value.encode()
        ).decode()

    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest) -> None:
        self.calls.append(f"merge-patch {kind} {name}")

    def delete_pod(self, namespace: str, name: str) -> bool:
        self.calls.append(f"delete Pod {name}")
        before = len(self.pods_by_selector)
        self.pods_by_selector = [p for p in self.pods_by_selector if p["metadata"]["name"] != name]
        return len(self.pods_by_selector) < before

    def remove_annotation(self, namespace: str, jobqueue: str, key: str) -> None:
        self.calls.append(f"remove annotation {key}")

    def nodes(self) -> list[Manifest]:
        self.calls.append("nodes")
        if self.nodes_refused is not None:
            raise kube.KubeError(self.nodes_refused)
        return copy.deepcopy(self.node_list)

    def node_leases(self) -> list[Manifest]:
        self.calls.append("node leases")
        return copy.deepcopy(self.lease_list)


def _check_protocol(fake: FakeKube) -> kube.KubeApi:
    return fake  # mypy: the fake implements the interface the reconcile and the tick use
