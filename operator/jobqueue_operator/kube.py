"""The only module that talks to the API server.

Children are written with server-side apply under one field manager, so a reconcile that runs twice (or
after a restart) changes nothing, and fields other managers own (the autoscaler's replicas) are left alone.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.resource import Resource

from jobqueue_operator import models, naming

Manifest = dict[str, Any]
Key = tuple[str, str]
"""(kind, name) of a child in the JobQueue's namespace."""

CHILD_KINDS: Final = (("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("v1", "Service"), ("v1", "Secret"))


class KubeError(Exception):
    """The API server refused a request; the message says which object and why, never a Secret's data."""


def _reason(exc: ApiException) -> str:
    try:
        return str(json.loads(exc.body).get("message", exc.reason))
    except (TypeError, ValueError):
        return str(exc.reason)


@dataclass
class Kube:
    api: client.ApiClient

    def __post_init__(self) -> None:
        self.dynamic = DynamicClient(self.api)
        self._resources: dict[Key, Resource] = {}

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials when running in a Pod, else KUBECONFIG / ~/.kube/config."""
        try:
            config.load_incluster_config()
            return cls(client.ApiClient())
        except config.ConfigException:
            return cls(config.new_client_from_config())

    def _resource(self, api_version: str, kind: str) -> Resource:
        key = (api_version, kind)
        if key not in self._resources:
            self._resources[key] = self.dynamic.resources.get(api_version=api_version, kind=kind)
        return self._resources[key]

    def apply(self, manifest: Manifest) -> Manifest:
        """Server-side apply `manifest` (forcing conflicts: the operator owns what it writes); the result."""
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        try:
            result = self.dynamic.server_side_apply(
                resource, body=manifest, field_manager=naming.FIELD_MANAGER, force_conflicts=True
            )
        except ApiException as exc:
            raise KubeError(f"{manifest['kind']} {manifest['metadata']['name']}: {_reason(exc)}") from None
        return dict(result.to_dict())

    def create(self, manifest: Manifest) -> bool:
        """Create `manifest` unless an object of that name exists; whether it was created."""
        resource = self._resource(manifest["apiVersion"], manifest["kind"])
        try:
            self.dynamic.create(resource, body=manifest, field_manager=naming.FIELD_MANAGER)
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise KubeError(f"{manifest['kind']} {manifest['metadata']['name']}: {_reason(exc)}") from None
        return True

    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool:
        """Delete one object (its dependents in the background); False when it was already gone."""
        resource = self._resource(api_version, kind)
        try:
            self.dynamic.delete(resource, name=name, namespace=namespace, propagation_policy="Background")
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeError(f"{kind} {name}: {_reason(exc)}") from None
        return True

    def children(self, namespace: str, jobqueue: str) -> dict[Key, Manifest]:
        """Every object the operator made for one JobQueue, by (kind, name)."""
        found: dict[Key, Manifest] = {}
        for api_version, kind in CHILD_KINDS:
            listed = self.dynamic.get(
                self._resource(api_version, kind),
                namespace=namespace,
                label_selector=naming.children_selector(jobqueue),
            )
            for item in listed.items:
                found[(kind, item.metadata.name)] = {"apiVersion": api_version, **item.to_dict()}
        return found

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A Secret's data (base64 values as stored), or None when it does not exist."""
        try:
            secret = client.CoreV1Api(self.api).read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"Secret {name}: {_reason(exc)}") from None
        return dict(secret.data or {})

    def patch_status(self, namespace: str, name: str, status: Manifest) -> None:
        """Replace the JobQueue's status (a merge patch of the status subresource)."""
        resource = self._resource(models.API_VERSION, models.KIND)
        try:
            self.dynamic.patch(
                resource.subresources["status"],
                body={"status": status},
                name=name,
                namespace=namespace,
                content_type="application/merge-patch+json",
            )
        except ApiException as exc:
            if exc.status == 404:
                return
            raise KubeError(f"JobQueue {name} status: {_reason(exc)}") from None


def keys(manifests: Iterable[Manifest]) -> set[Key]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}
