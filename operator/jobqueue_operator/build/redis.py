"""The managed broker: two password Secrets, a StatefulSet of one Redis, and its Service.

`<jq>-redis-auth` holds the password producers and workers use (key `password`, the source of truth, and
`url`, derived from it); `<jq>-redis-operator` holds the password of the operator's own Redis user, which
a user's edit of the first never touches, so the operator can always log in to rotate it
(docs/operator.md, "The managed broker's password").

The StatefulSet updates `OnDelete`: a changed template never restarts Redis by itself, because a restart
loses every task Redis holds unless persistence is on; the reconciler decides when (`broker_restart`).
"""

from __future__ import annotations

import string
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
from jobqueue_operator.models import SENTINEL_MEMBERS, JobQueue, ManagedBroker, parse_quantity
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

PORT: Final = 6379
SENTINEL_PORT: Final = 26379
DATA_DIR: Final = "/data"
REDIS_UID: Final = 999
"""The redis user of the official image."""
PASSWORD_ENV: Final = "REDIS_PASSWORD"
"""The container reads its password from this variable (from the JobQueue's Redis Secret)."""
OPERATOR_USER: Final = "jobqueue-operator"
"""The operator's own Redis user: every command, every key, every channel."""
OPERATOR_PASSWORD_ENV: Final = "JOBQUEUE_OPERATOR_PASSWORD"
"""The container reads the operator user's password from this variable (from `<jq>-redis-operator`)."""
OPERATOR_PERMISSIONS: Final = ("~*", "&*", "+@all")
UPDATE_STRATEGY: Final = "OnDelete"
TO_ON_DELETE: Final = {"spec": {"updateStrategy": {"type": UPDATE_STRATEGY, "rollingUpdate": None}}}
"""The merge patch that switches a StatefulSet made with `RollingUpdate` (by an earlier operator version) to
`OnDelete` before the apply: server-side apply cannot, the defaulted `rollingUpdate` (owned by no manager)
would stay and the API server refuses it beside `OnDelete`. Changing only the strategy restarts nothing."""


def _managed(jq: JobQueue) -> ManagedBroker:
    managed = jq.spec.broker.managed
    if managed is None:
        raise ValueError(f"JobQueue {jq.namespace}/{jq.name} has no managed broker")
    return managed


def host(jq: JobQueue) -> str:
    """The DNS name of the managed broker's Service."""
    return f"{naming.redis(jq.name)}.{jq.namespace}.svc"


_UNRESERVED: Final = frozenset(string.ascii_letters + string.digits + "-._~")


def quote(text: str) -> str:
    """Percent-encode everything but RFC 3986's unreserved characters (a password may hold `@`, `:`, `/`)."""
    return "".join(c if c in _UNRESERVED else "".join(f"%{byte:02X}" for byte in c.encode()) for c in text)


def url(jq: JobQueue, password: str, user: str = "") -> str:
    """The broker URL for a password (percent-encoded: any character may be in it) and, if given, a user."""
    return f"redis://{quote(user)}:{quote(password)}@{host(jq)}:{PORT}/0"


def high_availability(jq: JobQueue) -> bool:
    """Whether the managed broker runs as three Redis Pods under Sentinel (docs/broker.md)."""
    managed = jq.spec.broker.managed
    return managed is not None and managed.high_availability.enabled


def pod_domain(jq: JobQueue, service: str) -> str:
    """The DNS suffix of the Pods of a StatefulSet whose `serviceName` is the headless `service`."""
    return f"{service}.{jq.namespace}.svc"


def sentinel_address(jq: JobQueue, ordinal: int) -> str:
    """`host:port` of a highly available broker's Sentinel: its Pod's stable DNS name."""
    name = naming.sentinel(jq.name)
    return f"{name}-{ordinal}.{pod_domain(jq, naming.sentinel_headless(jq.name))}:{SENTINEL_PORT}"


def sentinel_addresses(jq: JobQueue) -> list[str]:
    return [sentinel_address(jq, ordinal) for ordinal in range(SENTINEL_MEMBERS)]


def sentinel_url(jq: JobQueue, password: str, user: str = "") -> str:
    """The URL of a highly available broker (kombu's `sentinel://`; the master name is the transport option
    `master_name`, `contract.SENTINEL_MASTER_NAME`): every Sentinel by its Pod's name, so a client asks the
    next one when one is gone (through the Sentinels' Service, a dead node's Sentinel stays an endpoint until
    the node is declared lost, and a client kept being sent to it). The Sentinels ask for the same password
    as Redis, or log in the operator's own user."""
    login = f"{quote(user)}:{quote(password)}"
    return ";".join(f"sentinel://{login}@{address}/0" for address in sentinel_addresses(jq))


def client_url(jq: JobQueue, password: str) -> str:
    """The URL producers and workers use (the Secret's `url`): Redis itself, or its Sentinels."""
    return sentinel_url(jq, password) if high_availability(jq) else url(jq, password)


def operator_url(jq: JobQueue, password: str) -> str:
    """The URL the operator reads and administers a managed broker with: its own user. For a highly
    available broker every Sentinel by its Pod's name (each is asked, and each is administered in a
    password rotation), the same user logging in to the Sentinels and to the master they name: the
    Sentinels and the members all declare it (docs/broker.md, "The operator's own user")."""
    if not high_availability(jq):
        return url(jq, password, OPERATOR_USER)
    return sentinel_url(jq, password, OPERATOR_USER)


def secret(jq: JobQueue, password: str) -> Manifest:
    """The broker's credentials for producers and workers. Created once; afterwards the reconciler only
    rewrites its `url` key from its `password` key (a rotation). A highly available broker's also names
    the master the Sentinels watch (`masterName`)."""
    data = {naming.PASSWORD_KEY: password, naming.URL_KEY: client_url(jq, password)}
    if high_availability(jq):
        data[naming.MASTER_NAME_KEY] = SENTINEL_MASTER_NAME
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(jq, naming.redis_secret(jq.name), naming.BROKER),
        "type": "Opaque",
        "stringData": data,
    }


def operator_secret(jq: JobQueue, password: str) -> Manifest:
    """The password of the operator's own Redis user. Created once, never rewritten."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata(jq, naming.redis_operator_secret(jq.name), naming.BROKER),
        "type": "Opaque",
        "stringData": {naming.PASSWORD_KEY: password},
    }


def memory_bounds(managed: ManagedBroker) -> broker_memory.Bounds | None:
    """The normal and the reserve maxmemory for the memory limit; None without a limit."""
    limit = managed.resources.limits.get("memory") if managed.resources else None
    return broker_memory.bounds(None if limit is None else parse_quantity(limit))


def maxmemory(managed: ManagedBroker) -> int:
    """`--maxmemory` in bytes: the normal share of the memory limit; 0 (no limit) without one."""
    found = memory_bounds(managed)
    return 0 if found is None else found.normal


def args(managed: ManagedBroker, aof: bool | None = None) -> list[str]:
    """redis-server's arguments. The working directory (/data) is where the append-only file goes. The
    default user's password is the Secret's (`requirepass`); the operator's user is declared too.
    `aof`: write the append-only file (default: with persistence; a highly available broker always does)."""
    persistence = (
        ["--appendonly", "yes", "--appendfsync", "everysec"]
        if (managed.persistence.enabled if aof is None else aof)
        else ["--appendonly", "no", "--save", ""]
    )
    return [
        "--port",
        str(PORT),
        "--requirepass",
        f"$({PASSWORD_ENV})",
        "--user",
        OPERATOR_USER,
        "on",
        f">$({OPERATOR_PASSWORD_ENV})",
        *OPERATOR_PERMISSIONS,
        "--maxmemory",
        str(maxmemory(managed)),
        "--maxmemory-policy",
        "noeviction",
        *persistence,
    ]


def readiness_command() -> list[str]:
    """Redis answers commands and is not loading its data. Logged in as the operator's user, whose password
    never changes; a refused login (NOAUTH after the failed AUTH) still proves Redis serves commands. It
    never reads the Secret's password, which a rotation drops while this container runs."""
    script = (
        f'out=$(redis-cli -p {PORT} --user {OPERATOR_USER} --pass "${OPERATOR_PASSWORD_ENV}" --no-auth-warning '
        'ping 2>/dev/null); [ "$out" = PONG ] || [ "${out#NOAUTH}" != "$out" ]'
    )
    return ["sh", "-c", script]


def statefulset(jq: JobQueue) -> Manifest:
    managed = _managed(jq)
    name = naming.redis(jq.name)
    container: Manifest = {
        "name": "redis",
        "image": managed.image,
        "command": ["redis-server"],
        "args": args(managed),
        "workingDir": DATA_DIR,
        "env": [
            secret_env(PASSWORD_ENV, naming.redis_secret(jq.name), naming.PASSWORD_KEY),
            secret_env(OPERATOR_PASSWORD_ENV, naming.redis_operator_secret(jq.name), naming.PASSWORD_KEY),
        ],
        "ports": [{"name": "redis", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": {"exec": {"command": readiness_command()}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"tcpSocket": {"port": "redis"}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": resources(managed.resources),
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    spec: Manifest = {
        "replicas": 1,
        "serviceName": name,
        "updateStrategy": {"type": UPDATE_STRATEGY},
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
