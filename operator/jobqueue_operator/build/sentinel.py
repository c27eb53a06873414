"""A highly available managed broker's Sentinels: a StatefulSet of three, a headless Service that names each
Pod, the Service clients reach them by (`<jq>-sentinel:26379`, the Secret's `sentinel://` URL), and a
PodDisruptionBudget that keeps a quorum (docs/broker.md, "Managed high availability").

Sentinel is Redis's own failover (the same image, `redis-server --sentinel`): quorum 2 of 3, the master name
`contract.SENTINEL_MASTER_NAME`, the Redis password for clients of the Sentinels too, and the operator's own
user for the operator, for the Sentinels' talk to each other and to the members. Each Sentinel writes its
configuration at start (`bootstrap.SENTINEL_SCRIPT`) into an emptyDir: what it learns (peers, replicas, the
epoch) its peers and the members tell it again within seconds, so nothing of it needs to outlive the Pod.
The Pods start in parallel and roll one at a time (`RollingUpdate`): a restarted Sentinel costs no failover.
"""

from __future__ import annotations

from typing import Final

from jobqueue_operator import naming
from jobqueue_operator.build import bootstrap, common, redis, redis_ha
from jobqueue_operator.build.common import (
    RESTRICTED_CONTAINER,
    TERMINATION_MESSAGE_POLICY,
    Manifest,
    field_env,
    metadata,
    restricted_pod,
    secret_env,
)
from jobqueue_operator.models import SENTINEL_MEMBERS, SENTINEL_QUORUM, JobQueue
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

DATA_DIR: Final = "/data"
RESOURCES: Final[Manifest] = {"requests": {"cpu": "10m", "memory": "16Mi"}}
"""A Sentinel is a few MiB and wakes ten times a second; no limit, so that it is never the one OOM-killed."""
STARTUP_SECONDS: Final = 300
"""How long a Sentinel may wait for the master's name to resolve before the kubelet restarts it."""


def readiness_command() -> list[str]:
    """The Sentinel answers and knows the master (logged in as the operator's user, whose password never
    changes: never the Secret's, which a rotation drops while this container runs)."""
    script = (
        f'REDISCLI_AUTH="${redis.OPERATOR_PASSWORD_ENV}" redis-cli --no-auth-warning --user {redis.OPERATOR_USER} '
        f"-p {redis.SENTINEL_PORT} "
        f"sentinel get-master-addr-by-name {SENTINEL_MASTER_NAME} | head -n 1 | grep -qE '^[A-Za-z0-9.-]+$'"
    )
    return ["sh", "-c", script]


def statefulset(jq: JobQueue) -> Manifest:
    broker = redis_ha.managed(jq)
    ha = broker.high_availability
    name = naming.sentinel(jq.name)
    domain = redis.pod_domain(jq, naming.sentinel_headless(jq.name))
    container: Manifest = {
        "name": "sentinel",
        "image": broker.image,
        "command": ["sh", "-c", bootstrap.SENTINEL_SCRIPT, "redis-sentinel"],
        "workingDir": DATA_DIR,
        "env": [
            secret_env(redis.PASSWORD_ENV, naming.redis_secret(jq.name), naming.PASSWORD_KEY),
            secret_env(redis.OPERATOR_PASSWORD_ENV, naming.redis_operator_secret(jq.name), naming.PASSWORD_KEY),
            field_env(redis_ha.POD_NAME_ENV, "metadata.name"),
            {"name": bootstrap.Env.SENTINEL, "value": f"$({redis_ha.POD_NAME_ENV}).{domain}:{redis.SENTINEL_PORT}"},
            {"name": bootstrap.Env.SENTINELS, "value": " ".join(redis.sentinel_addresses(jq))},
            {"name": bootstrap.Env.MEMBERS, "value": " ".join(redis_ha.member_addresses(jq))},
            {"name": bootstrap.Env.QUORUM, "value": str(SENTINEL_QUORUM)},
            {"name": bootstrap.Env.DOWN_AFTER, "value": str(ha.down_after_milliseconds)},
            {"name": bootstrap.Env.FAILOVER_TIMEOUT, "value": str(ha.failover_timeout_milliseconds)},
            {"name": bootstrap.Env.DIRECTORY, "value": DATA_DIR},
        ],
        "ports": [{"name": "sentinel", "containerPort": redis.SENTINEL_PORT, "protocol": "TCP"}],
        "startupProbe": redis_ha.startup_probe(STARTUP_SECONDS, "sentinel"),
        "readinessProbe": {"exec": {"command": readiness_command()}, "periodSeconds": 5, "timeoutSeconds": 3},
        "livenessProbe": {"tcpSocket": {"port": "sentinel"}, "periodSeconds": 10, "failureThreshold": 6},
        "resources": RESOURCES,
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "volumeMounts": [{"name": "data", "mountPath": DATA_DIR}],
    }
    pod: Manifest = {
        "containers": [container],
        "securityContext": {**restricted_pod(redis.REDIS_UID), "fsGroup": redis.REDIS_UID},
        "terminationGracePeriodSeconds": 10,
        "volumes": [{"name": "data", "emptyDir": {}}],
    }
    affinity = redis_ha.anti_affinity(jq, naming.SENTINEL)
    if affinity is not None:
        pod["affinity"] = affinity
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": metadata(jq, name, naming.SENTINEL),
        "spec": {
            "replicas": SENTINEL_MEMBERS,
            "serviceName": naming.sentinel_headless(jq.name),
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": naming.selector_labels(jq, naming.SENTINEL)},
            "template": {"metadata": {"labels": naming.labels(jq, naming.SENTINEL)}, "spec": pod},
        },
    }


def service(jq: JobQueue) -> Manifest:
    """The Service clients ask for the master (`sentinel://<jq>-sentinel.<ns>.svc:26379`): ready Sentinels."""
    return common.service(jq, naming.sentinel(jq.name), naming.SENTINEL, "sentinel", redis.SENTINEL_PORT)


def headless_service(jq: JobQueue) -> Manifest:
    """Names each Sentinel Pod, for its peers and the members."""
    name = naming.sentinel_headless(jq.name)
    return redis_ha.headless_service(jq, name, naming.SENTINEL, "sentinel", redis.SENTINEL_PORT)


def disruption_budget(jq: JobQueue) -> Manifest:
    return redis_ha.disruption_budget(jq, naming.sentinel(jq.name), naming.SENTINEL)
