"""Pieces shared by the builders: broker URL env, pod placement, resources."""

from __future__ import annotations

from typing import Any

from jobqueue_operator import naming
from jobqueue_operator.models import JobQueue, Resources

Manifest = dict[str, Any]


def metadata(jq: JobQueue, name: str, component: str, queue: str | None = None) -> Manifest:
    return {"name": name, "namespace": jq.namespace, "labels": naming.labels(jq, component, queue)}


def service(jq: JobQueue, name: str, component: str, port_name: str, port: int) -> Manifest:
    """A ClusterIP Service in front of one component's Pods, on the container port named `port_name`."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(jq, name, component),
        "spec": {
            "selector": naming.selector_labels(jq, component),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }


def broker_url_ref(jq: JobQueue) -> tuple[str, str]:
    """(Secret name, key) of the broker URL: the managed broker's Secret or the user's."""
    external = jq.spec.broker.external
    if external is not None:
        return external.url_secret_ref.name, external.url_secret_ref.key
    return naming.redis_secret(jq.name), naming.URL_KEY


def secret_env(name: str, secret: str, key: str) -> Manifest:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def field_env(name: str, field_path: str) -> Manifest:
    return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": field_path}}}


def resources(spec: Resources | None) -> Manifest:
    if spec is None:
        return {}
    return spec.model_dump(by_alias=True, exclude_defaults=True)


def user_env(jq: JobQueue) -> list[Manifest]:
    return [var.model_dump(by_alias=True, exclude_none=True) for var in jq.spec.env]


def user_env_from(jq: JobQueue) -> list[Manifest]:
    return [source.model_dump(by_alias=True, exclude_none=True) for source in jq.spec.env_from]


def placement(jq: JobQueue) -> Manifest:
    """The Pod spec fields that choose where and as whom user Pods run; empty ones left out."""
    spec = jq.spec
    fields: Manifest = {
        "serviceAccountName": spec.service_account_name,
        "imagePullSecrets": [ref.model_dump(by_alias=True) for ref in spec.image_pull_secrets],
        "nodeSelector": dict(spec.node_selector),
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in spec.tolerations],
        "affinity": spec.affinity,
    }
    return {key: value for key, value in fields.items() if value}


RESTRICTED_CONTAINER: Manifest = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
}
