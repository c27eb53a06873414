"""The managed broker: a password Secret, a StatefulSet of one Redis, and its Service."""

from __future__ import annotations

from typing import Final

from jobqueue_operator import broker_memory, naming
from jobqueue_operator.build import common
from jobqueue_operator.build.common import (
    RESTRICTED_CONTAINER,
    TERMINATION_MESSAGE_POLICY,
    Manifest,
    metadata,
    resources,
    restricted_pod,
    secret_env,
)
from jobqueue_operator.models import JobQueue, ManagedBroker, parse_quantity

PORT: Final = 6379
DATA_DIR: Final = "/data"
REDIS_UID: Final = 999
"""The redis user of the official image."""
PASSWORD_ENV: Final = "REDIS_PASSWORD"
"""The container reads its password from this variable (from the JobQueue's Redis Secret)."""


def _managed(jq: JobQueue) -> ManagedBroker:
    managed = jq.spec.broker.managed
    if managed is None:
        raise ValueError(f"JobQueue {jq.namespace}/{jq.name} has no managed broker")
    return managed


def host(jq: JobQueue) -> str:
    """The DNS name of the managed broker's Service."""
    return f"{naming.redis(jq.name)}.{jq.namespace}.svc"


def url(jq: JobQueue, password: str) -> str:
    return f"redis://:{password}@{host(jq)}:{PORT}/0"


def secret(jq: JobQueue, password: str) -> Manifest:
    """The broker's credentials. Created once; the reconciler never rewrites an existing one."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(jq, naming.redis_secret(jq.name), naming.BROKER),
        "type": "Opaque",
        "stringData": {naming.PASSWORD_KEY: password, naming.URL_KEY: url(jq, password)},
    }


def memory_bounds(managed: ManagedBroker) -> broker_memory.Bounds | None:
    """The normal and the reserve maxmemory for the memory limit; None without a limit."""
    limit = managed.resources.limits.get("memory") if managed.resources else None
    return broker_memory.bounds(None if limit is None else parse_quantity(limit))


def maxmemory(managed: ManagedBroker) -> int:
    """`--maxmemory` in bytes: the normal share of the memory limit; 0 (no limit) without one."""
    found = memory_bounds(managed)
    return 0 if found is None else found.normal


def args(managed: ManagedBroker) -> list[str]:
    """redis-server's arguments. The working directory (/data) is where the append-only file goes."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "everysec"]
        if managed.persistence.enabled
        else ["--appendonly", "no", "--save", ""]
    )
    return [
        "--port",
        str(PORT),
        "--requirepass",
        f"$({PASSWORD_ENV})",
        "--maxmemory",
        str(maxmemory(managed)),
        "--maxmemory-policy",
        "noeviction",
        *persistence,
    ]


def statefulset(jq: JobQueue) -> Manifest:
    managed = _managed(jq)
    name = naming.redis(jq.name)
    ping = ["sh", "-c", f'redis-cli -p 6379 -a "${PASSWORD_ENV}" --no-auth-warning ping | grep -q PONG']
    container: Manifest = {
        "name": "redis",
        "image": managed.image,
        "command": ["redis-server"],
        "args": args(managed),
        "workingDir": DATA_DIR,
        "env": [secret_env(PASSWORD_ENV, naming.redis_secret(jq.name), naming.PASSWORD_KEY)],
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": ping}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": resources(managed.resources),
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    spec: Manifest = {
        "replicas": 1,
        "serviceName": name,
        "selector": {"matchLabels": naming.selector_labels(jq, naming.BROKER)},
        "template": {
            "metadata": {"labels": naming.labels(jq, naming.BROKER)},
            "spec": {
                "containers": [container],
                "securityContext": {**restricted_pod(REDIS_UID), "fsGroup": REDIS_UID},
                "terminationGracePeriodSeconds": 30,
            },
        },
    }
    persistence = managed.persistence
    if persistence.enabled:
        claim: Manifest = {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": persistence.size}},
        }
        if persistence.storage_class_name:
            claim["storageClassName"] = persistence.storage_class_name
        spec["volumeClaimTemplates"] = [
            {"metadata": {"name": "data", "labels": naming.labels(jq, naming.BROKER)}, "spec": claim}
        ]
        retained = "Retain" if persistence.keep_on_delete else "Delete"
        spec["persistentVolumeClaimRetentionPolicy"] = {"whenDeleted": retained, "whenScaled": "Retain"}
    else:
        spec["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(jq, name, naming.BROKER),
        "spec": spec,
    }


def service(jq: JobQueue) -> Manifest:
    return common.service(jq, naming.redis(jq.name), naming.BROKER, "redis", PORT)
