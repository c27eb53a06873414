"""The only module that talks to the API server.

Children are written with server-side apply under one field manager, so a reconcile that runs twice (or
after a restart) changes nothing, and fields other managers own (the autoscaler's replicas) are left alone.
The JobQueue's status is server-side applied too, by two field managers that own different fields: the
reconciler (conditions, children's replicas) and the autoscaler (backlog, depths, its own state).
Independent requests of one reconcile (the five child lists, the applies) go out together: on a busy API
server a reconcile then waits about one round trip per step instead of one per object.

`KubeApi` is the interface the reconcile and the tick use, so their unit tests can hand them a fake.
"""

from __future__ import annotations

import base64
import binascii
import datetime
import json
import logging
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Final, Protocol, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.resource import Resource
from urllib3.exceptions import HTTPError

from jobqueue_operator import events, models, naming, nodes
from jobqueue_operator.build.common import Manifest

Key = tuple[str, str]
"""(kind, name) of a child in the JobQueue's namespace."""

EVENT_MESSAGE_LIMIT: Final = 1024
"""The API server refuses longer Event messages."""
CHILD_KINDS: Final = (
    ("apps/v1", "Deployment"),
    ("apps/v1", "StatefulSet"),
    ("v1", "Service"),
    ("v1", "Secret"),
    ("policy/v1", "PodDisruptionBudget"),
)
CONNECTIONS: Final = 32
"""HTTP connections kept to the API server: handler threads times the requests each sends at once."""
NODE_READ_TIMEOUT_SECONDS: Final = 10.0
"""A list of the Nodes or their Leases that takes longer is given up (the tick goes on without it)."""
PARALLEL_REQUESTS: Final = 6
"""Requests one reconcile sends at once (one per child of a three-queue JobQueue, roughly)."""

_logger = logging.getLogger(__name__)
T = TypeVar("T")
R = TypeVar("R")


class KubeError(Exception):
    """The API server refused a request; the message says which object and why, never a Secret's data."""


class KubeApi(Protocol):
    """What the reconcile and the autoscaler's tick ask of the API server."""

    def children(self, namespace: str, jobqueue: str) -> dict[Key, Manifest]: ...
    def pods(self, namespace: str, selector: str) -> list[Manifest]: ...
    def failed_create_events(self, namespace: str, kind: str, name: str) -> list[Manifest]: ...
    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None: ...
    def create(self, manifest: Manifest) -> bool: ...
    def apply_many(self, manifests: Sequence[Manifest]) -> list[Manifest | KubeError]: ...
    def delete(self, api_version: str, kind: str, namespace: str, name: str) -> bool: ...
    def apply_status(self, namespace: str, name: str, status: Manifest, manager: str) -> None: ...
    def post_event(self, involved: Mapping[str, Any], event: events.Event) -> None: ...
    def worker_deployments(self, namespace: str, jobqueue: str) -> dict[str, Manifest]: ...
    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None: ...
    def scale(self, namespace: str, name: str, replicas: int) -> None: ...
    def write_secret_key(self, namespace: str, name: str, key: str, value: str) -> None: ...
    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest) -> None: ...
    def delete_pod(self, namespace: str, name: str) -> bool: ...
    def remove_annotation(self, namespace: str, jobqueue: str, key: str) -> None: ...
    def nodes(self) -> list[Manifest]: ...
    def node_leases(self) -> list[Manifest]: ...


def decoded(data: Mapping[str, str] | None, key: str) -> str | None:
    """One value of a Secret's data (base64 as the API server returns it), decoded; None if absent or bad."""
    if data is None or key not in data:
        return None
    try:
        return base64.b64decode(data[key]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def secret_value(api: KubeApi, namespace: str, name: str, key: str) -> str | None:
    """One key of a Secret, decoded; None when the Secret or the key does not exist."""
    return decoded(api.secret_data(namespace, name), key)


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
        self._pool = ThreadPoolExecutor(PARALLEL_REQUESTS, thread_name_prefix="kube")
        # Discovery once, now: not in the first reconcile, and not from several threads at once.
        for api_version, kind in (*CHILD_KINDS, (models.API_VERSION, models.KIND)):
            self._resource(api_version, kind)

    @classmethod
    def from_environment(cls) -> Kube:
        """In-cluster credentials when running in a Pod, else KUBECONFIG / ~/.kube/config."""
        configuration = client.Configuration()
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            config.load_kube_config(client_configuration=configuration)
        configuration.connection_pool_maxsize = CONNECTIONS
        return cls(client.ApiClient(configuration))

    def _together(self, call: Callable[[T], R], items: Sequence[T]) -> list[R]:
        """`call` on every item, sent at once; results in order. The first exception is raised."""
        if len(items) <= 1:
            return [call(item) for item in items]
        return list(self._pool.map(call, items))

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

    def apply_many(self, manifests: Sequence[Manifest]) -> list[Manifest | KubeError]:
        """`apply` every manifest at once; per manifest the result or the refusal."""

        def one(manifest: Manifest) -> Manifest | KubeError:
            try:
                return self.apply(manifest)
            except KubeError as exc:
                return exc

        return self._together(one, manifests)

    def children(self, namespace: str, jobqueue: str) -> dict[Key, Manifest]:
        """Every object the operator made for one JobQueue, by (kind, name)."""

        def listed(kind: tuple[str, str]) -> list[Manifest]:
            api_version = kind[0]
            result = self.dynamic.get(
                self._resource(*kind), namespace=namespace, label_selector=naming.children_selector(jobqueue)
            )
            return [{"apiVersion": api_version, **item.to_dict()} for item in result.items]

        found: dict[Key, Manifest] = {}
        for (_, kind), items in zip(CHILD_KINDS, self._together(listed, CHILD_KINDS), strict=True):
            for item in items:
                found[(kind, item["metadata"]["name"])] = item
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

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        """A ConfigMap's data, or None when it does not exist."""
        try:
            found = client.CoreV1Api(self.api).read_namespaced_config_map(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise KubeError(f"ConfigMap {name}: {_reason(exc)}") from None
        return {**(found.binary_data or {}), **(found.data or {})}

    def failed_create_events(self, namespace: str, kind: str, name: str) -> list[Manifest]:
        """The FailedCreate Events of one object (admission or quota refusing its Pods), newest last."""
        selector = f"involvedObject.kind={kind},involvedObject.name={name},reason=FailedCreate"
        listed = client.CoreV1Api(self.api).list_namespaced_event(namespace, field_selector=selector)
        events = [self.api.sanitize_for_serialization(item) for item in listed.items]
        return sorted(events, key=lambda e: str(e.get("lastTimestamp") or e.get("eventTime") or ""))

    def apply_status(self, namespace: str, name: str, status: Manifest, manager: str) -> None:
        """Server-side apply of the JobQueue's status fields `manager` owns (the others stay as they are)."""
        resource = self._resource(models.API_VERSION, models.KIND)
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name, "namespace": namespace},
            "status": status,
        }
        try:
            self.dynamic.server_side_apply(
                resource.subresources["status"],
                body=body,
                name=name,
                namespace=namespace,
                field_manager=manager,
                force_conflicts=True,
            )
        except ApiException as exc:
            if exc.status == 404:
                return
            raise KubeError(f"JobQueue {name} status: {_reason(exc)}") from None

    def post_event(self, involved: Mapping[str, Any], event: events.Event) -> None:
        """`event` on `involved` (a JobQueue body), as `kubectl describe` shows it; never raises. A Warning that
        repeats its cause raises the count of the Event already posted for it (`events.to_raise`)."""
        metadata = involved.get("metadata") or {}
        namespace, name = metadata.get("namespace"), metadata.get("name")
        now = datetime.datetime.now(datetime.UTC)
        stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")
        message = event.message[:EVENT_MESSAGE_LIMIT]
        core = client.CoreV1Api(self.api)
        try:
            repeated = events.to_raise(event, self._posted(namespace, metadata.get("uid"), event), now.timestamp())
            if repeated is not None:
                raised = [
                    {"op": "replace", "path": "/count", "value": repeated.count + 1},
                    {"op": "replace", "path": "/lastTimestamp", "value": stamp},
                    {"op": "replace", "path": "/message", "value": message},
                ]
                core.patch_namespaced_event(repeated.name, namespace, raised)
                return
            core.create_namespaced_event(namespace, _event_body(involved, event, message, stamp))
        except ApiException as exc:  # an Event is a report: losing one must not fail the reconcile
            _logger.warning("Event %s on JobQueue %s not posted: %s", event.reason, name, _reason(exc))

    def _posted(self, namespace: str | None, uid: str | None, event: events.Event) -> list[events.Posted]:
        """The Events of the object with this reason, for `events.to_raise` (none needed for a Normal one)."""
        if event.type != "Warning" or not uid:
            return []
        selector = f"involvedObject.uid={uid},reason={event.reason}"
        listed = client.CoreV1Api(self.api).list_namespaced_event(namespace, field_selector=selector)
        found = []
        for item in listed.items:
            last = item.last_timestamp or item.event_time or item.metadata.creation_timestamp
            cause = (item.metadata.annotations or {}).get(events.CAUSE_ANNOTATION)
            found.append(events.Posted(item.metadata.name, cause, item.count or 1, last.timestamp() if last else 0.0))
        return found

    # -- the autoscaler's calls (scaling.py) --

    def worker_deployments(self, namespace: str, jobqueue: str) -> dict[str, Manifest]:
        """The worker Deployments of one JobQueue, by real queue name (`naming.queue_of`)."""
        selector = f"{naming.children_selector(jobqueue)},{naming.COMPONENT_LABEL}={naming.WORKER}"
        listed = client.AppsV1Api(self.api).list_namespaced_deployment(namespace, label_selector=selector)
        found: dict[str, Manifest] = {}
        for item in listed.items:
            deployment: Manifest = self.api.sanitize_for_serialization(item)
            queue = naming.queue_of(deployment.get("metadata") or {})
            if queue:
                found[queue] = deployment
        return found

    def pods(self, namespace: str, selector: str) -> list[Manifest]:
        """Pods matching a label selector, as the API server returns them (camelCase)."""
        listed = client.CoreV1Api(self.api).list_namespaced_pod(namespace, label_selector=selector)
        return [self.api.sanitize_for_serialization(item) for item in listed.items]

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        """Merge `annotations` into a Pod's; a Pod already gone is not an error."""
        try:
            client.CoreV1Api(self.api).patch_namespaced_pod(name, namespace, {"metadata": {"annotations": annotations}})
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"Pod {name}: {_reason(exc)}") from None

    def write_secret_key(self, namespace: str, name: str, key: str, value: str) -> None:
        """Set one key of a Secret (a merge patch of `data`; the other keys stay)."""
        patch = {"data": {key: base64.b64encode(value.encode()).decode()}}
        try:
            client.CoreV1Api(self.api).patch_namespaced_secret(name, namespace, patch)
        except ApiException as exc:
            raise KubeError(f"Secret {name}: {_reason(exc)}") from None

    def merge_patch(self, api_version: str, kind: str, namespace: str, name: str, patch: Manifest) -> None:
        """A JSON merge patch of one object (a `null` removes a field, which server-side apply cannot do for
        a field no manager owns, such as a defaulted one)."""
        resource = self._resource(api_version, kind)
        try:
            self.dynamic.patch(
                resource, body=patch, name=name, namespace=namespace, content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            raise KubeError(f"{kind} {name}: {_reason(exc)}") from None

    def delete_pod(self, namespace: str, name: str) -> bool:
        """Delete a Pod (its grace period as it asks); False when it was already gone."""
        try:
            client.CoreV1Api(self.api).delete_namespaced_pod(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise KubeError(f"Pod {name}: {_reason(exc)}") from None
        return True

    # -- the nodes (node_reads.py) --

    def nodes(self) -> list[Manifest]:
        """Every Node, as the API server returns it (camelCase). Raises KubeError."""
        try:
            listed = client.CoreV1Api(self.api).list_node(_request_timeout=NODE_READ_TIMEOUT_SECONDS)
        except ApiException as exc:
            raise KubeError(f"Nodes: {_reason(exc)}") from None
        except HTTPError as exc:
            raise KubeError(f"Nodes: {exc}") from None
        return [self.api.sanitize_for_serialization(item) for item in listed.items]

    def node_leases(self) -> list[Manifest]:
        """Every kubelet's Lease (namespace kube-node-lease, one per node, named after it). Raises KubeError."""
        try:
            listed = client.CoordinationV1Api(self.api).list_namespaced_lease(
                nodes.LEASE_NAMESPACE, _request_timeout=NODE_READ_TIMEOUT_SECONDS
            )
        except ApiException as exc:
            raise KubeError(f"Leases in {nodes.LEASE_NAMESPACE}: {_reason(exc)}") from None
        except HTTPError as exc:
            raise KubeError(f"Leases in {nodes.LEASE_NAMESPACE}: {exc}") from None
        return [self.api.sanitize_for_serialization(item) for item in listed.items]

    def remove_annotation(self, namespace: str, jobqueue: str, key: str) -> None:
        """Remove one annotation of a JobQueue (a merge patch); a JobQueue already gone is not an error."""
        resource = self._resource(models.API_VERSION, models.KIND)
        patch = {"metadata": {"annotations": {key: None}}}
        try:
            self.dynamic.patch(
                resource, body=patch, name=jobqueue, namespace=namespace, content_type="application/merge-patch+json"
            )
        except ApiException as exc:
            if exc.status != 404:
                raise KubeError(f"JobQueue {jobqueue}: {_reason(exc)}") from None

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        """Set a worker Deployment's replicas as the autoscaler's field manager (server-side apply of that one
        field), so the field is the autoscaler's and the reconciler's applies, which leave it out, keep it."""
        resource = self._resource("apps/v1", "Deployment")
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"replicas": replicas},
        }
        try:
            self.dynamic.server_side_apply(
                resource,
                body=body,
                name=name,
                namespace=namespace,
                field_manager=naming.AUTOSCALER_FIELD_MANAGER,
                force_conflicts=True,
            )
        except ApiException as exc:
            raise KubeError(f"Deployment {name} scale: {_reason(exc)}") from None


def keys(manifests: Iterable[Manifest]) -> set[Key]:
    return {(m["kind"], m["metadata"]["name"]) for m in manifests}


def _event_body(involved: Mapping[str, Any], event: events.Event, message: str, stamp: str) -> Manifest:
    """A new Event on `involved`; a Warning keeps its cause in an annotation, for its repeats to find."""
    metadata = involved.get("metadata") or {}
    annotations = {events.CAUSE_ANNOTATION: event.key} if event.type == "Warning" else {}
    return {
        "metadata": {
            "generateName": f"{metadata.get('name', 'jobqueue')}.",
            "namespace": metadata.get("namespace"),
            "annotations": annotations,
        },
        "involvedObject": {
            "apiVersion": involved.get("apiVersion", models.API_VERSION),
            "kind": involved.get("kind", models.KIND),
            "name": metadata.get("name"),
            "namespace": metadata.get("namespace"),
            "uid": metadata.get("uid"),
        },
        "type": event.type,
        "reason": event.reason,
        "message": message,
        "source": {"component": naming.OPERATOR_NAME},
        "reportingComponent": naming.OPERATOR_NAME,
        "reportingInstance": socket.gethostname(),
        "firstTimestamp": stamp,
        "lastTimestamp": stamp,
        "count": 1,
    }
