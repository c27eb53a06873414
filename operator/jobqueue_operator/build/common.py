"""Pieces shared by the builders: metadata with ownership, broker URL env, pod placement and security,
resources, and the hash of the configuration a Pod template reads."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping
from typing import Any, Final

from jobqueue_operator import models, naming
from jobqueue_operator.models import JobQueue, Resources
from jobqueue_worker.contract import Env

Manifest = dict[str, Any]
ConfigRef = tuple[str, str]
"""("Secret" or "ConfigMap", name) of an object a Pod template reads its environment from."""
Config = Mapping[ConfigRef, Mapping[str, str] | None]
"""The data of each referenced object as last read (None: it does not exist)."""

TERMINATION_MESSAGE_POLICY: Final = "FallbackToLogsOnError"
"""A container that fails without writing a termination message gets the tail of its log as one, so the
JobQueue's status can say why it crashed (causes.py)."""


def owner_reference(jq: JobQueue) -> Manifest:
    """The JobQueue as the controller owner of a child: deleting it deletes the child."""
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "name": jq.name,
        "uid": jq.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(jq: JobQueue, name: str, component: str, queue: str | None = None) -> Manifest:
    """A child's metadata: its name, labels and the JobQueue as its owner."""
    return {
        "name": name,
        "namespace": jq.namespace,
        "labels": naming.labels(jq, component, queue),
        "ownerReferences": [owner_reference(jq)],
    }


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


def master_name_env(jq: JobQueue) -> Manifest:
    """JOBQUEUE_BROKER_MASTER_NAME from the broker Secret's `masterName` key, if it has one: the Sentinel
    master name of a sentinel:// broker. The managed broker's Secret always has it; an external broker's may
    (`optional`: without it the variable is unset and every client uses contract.SENTINEL_MASTER_NAME)."""
    secret, _ = broker_url_ref(jq)
    ref = {"name": secret, "key": naming.MASTER_NAME_KEY, "optional": True}
    return {"name": Env.BROKER_MASTER_NAME, "valueFrom": {"secretKeyRef": ref}}


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
"""A container's part of Pod Security's `restricted` profile."""


def restricted_pod(run_as_user: int | None = None) -> Manifest:
    """A Pod's part of Pod Security's `restricted` profile: non-root, the runtime's default seccomp profile.
    `run_as_user` for images whose user is a name (the kubelet cannot check a name is not root)."""
    context: Manifest = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}
    if run_as_user is not None:
        context.update(runAsUser=run_as_user, runAsGroup=run_as_user)
    return context


def _references(pod_spec: Mapping[str, Any]) -> Iterator[tuple[ConfigRef, str | None]]:
    """Every (object, key) the Pod's containers read env from; key None for a whole envFrom object."""
    for container in pod_spec.get("containers") or []:
        for var in container.get("env") or []:
            source = var.get("valueFrom") or {}
            for kind, field in (("Secret", "secretKeyRef"), ("ConfigMap", "configMapKeyRef")):
                if field in source:
                    yield (kind, source[field]["name"]), source[field]["key"]
        for env_from in container.get("envFrom") or []:
            for kind, field in (("Secret", "secretRef"), ("ConfigMap", "configMapRef")):
                if field in env_from:
                    yield (kind, env_from[field]["name"]), None


def references(manifest: Mapping[str, Any]) -> set[ConfigRef]:
    """The Secrets and ConfigMaps a child's Pod template reads its environment from."""
    template = (manifest.get("spec") or {}).get("template") or {}
    return {ref for ref, _ in _references(template.get("spec") or {})}


def config_hash(pod_spec: Mapping[str, Any], config: Config) -> str | None:
    """A hash of exactly the values the Pod's environment reads (None when it reads none). Written on the
    Pod template, so a changed Secret or ConfigMap rolls the Pods: env is read only when a container starts."""
    used: dict[str, Any] = {}
    for ref, key in sorted(_references(pod_spec), key=lambda item: (item[0], item[1] or "")):
        data = config.get(ref)
        value = None if data is None else (dict(sorted(data.items())) if key is None else data.get(key))
        used[f"{ref[0]}/{ref[1]}/{key or '*'}"] = value
    if not used:
        return None
    return hashlib.sha256(json.dumps(used, sort_keys=True).encode()).hexdigest()[:16]


def with_config_hash(manifest: Manifest, config: Config) -> Manifest:
    """`manifest` (a Deployment or StatefulSet) with the hash of what its Pods read, on its Pod template."""
    template = manifest["spec"]["template"]
    digest = config_hash(template["spec"], config)
    if digest is None:
        return manifest
    annotations = {**template["metadata"].get("annotations", {}), naming.CONFIG_HASH_ANNOTATION: digest}
    template = {**template, "metadata": {**template["metadata"], "annotations": annotations}}
    return {**manifest, "spec": {**manifest["spec"], "template": template}}
