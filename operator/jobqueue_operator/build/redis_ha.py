"""A highly available managed broker's Redis: three members (one master, two replicas) in the single broker's
own StatefulSet, a headless Service that names each Pod, and a PodDisruptionBudget (docs/broker.md, "Managed
high availability").

The StatefulSet is the single broker's (`redis.statefulset`: same name, selector, `serviceName`, volume claim
and `OnDelete` updates) at three replicas, so that a future switch of a running broker to high availability
can keep its Pod `-0`, its volume and its data (not supported yet: reconcile/broker_mode.py keeps a running
broker's mode; docs/broker.md, "Switching modes"). What changes is the Pod template: the start-up script
(`bootstrap.MEMBER_SCRIPT`) that finds the master, AOF on every member, replication as the operator's own user
(`masteruser`, `masterauth`), `min-replicas-to-write` / `min-replicas-max-lag`, the announced name, and the
anti-affinity.

The Service `<jq>-redis` becomes headless (no ClusterIP: clients go through the Sentinels) and publishes Pods
that are not ready yet, so that `<jq>-redis-N.<jq>-redis.<ns>.svc` resolves for each member as soon as it
exists: the members and the Sentinels know each other by those names.
"""

from __future__ import annotations

import math
from typing import Final

from jobqueue_operator import naming
from jobqueue_operator.build import bootstrap, redis
from jobqueue_operator.build.common import Manifest, field_env, metadata
from jobqueue_operator.build.redis import pod_domain, sentinel_addresses
from jobqueue_operator.build.workers import HOSTNAME_KEY
from jobqueue_operator.models import SENTINEL_MEMBERS, HighAvailability, JobQueue, ManagedBroker

POD_NAME_ENV: Final = "POD_NAME"
STARTUP_PERIOD_SECONDS: Final = 5
LOADING_ALLOWANCE_SECONDS: Final = 120
"""Beyond the wait for a promotion: the time a member may take to load its data before it listens."""
LIVENESS_PERIOD_SECONDS: Final = 10
"""Also the probe's timeout: it may ask three Sentinels (`bootstrap.ASK_TIMEOUT_SECONDS` each)."""
LIVENESS_FAILURES: Final = 3
"""30 s attached to another master than the Sentinels name: far longer than a failover's reconfiguration."""
MAX_UNAVAILABLE: Final = 1
"""Voluntary disruptions take one member at a time: a master and a replica stay, so writes go on."""


def managed(jq: JobQueue) -> ManagedBroker:
    found = jq.spec.broker.managed
    if found is None or not found.high_availability.enabled:
        raise ValueError(f"JobQueue {jq.namespace}/{jq.name} has no highly available managed broker")
    return found


def member_address(jq: JobQueue, ordinal: int) -> str:
    """`host:port` of a Redis member: its Pod's stable DNS name."""
    name = naming.redis(jq.name)
    return f"{name}-{ordinal}.{pod_domain(jq, name)}:{redis.PORT}"


def member_addresses(jq: JobQueue) -> list[str]:
    """Every member's `host:port`, `-0` (the first master) first."""
    return [member_address(jq, ordinal) for ordinal in range(SENTINEL_MEMBERS)]


def named_master_wait_seconds(ha: HighAvailability) -> int:
    """How long a restarting member the Sentinels still name master waits for them to promote a replica:
    the master must be down for `down-after`, and a failover that fails is retried after twice its timeout."""
    return math.ceil((ha.down_after_milliseconds + 2 * ha.failover_timeout_milliseconds) / 1000)


def args(broker: ManagedBroker) -> list[str]:
    """redis-server's arguments on every member (the start-up script adds the announced name and, on a
    replica, `--replicaof`): the single broker's with AOF always on, the master refusing writes it cannot
    replicate, and replication logged in as the operator's own user (`masteruser`), whose password never
    changes: rotating the Secret's password touches neither replication nor the Sentinels' monitoring."""
    ha = broker.high_availability
    return [
        *redis.args(broker, aof=True),
        "--masteruser",
        redis.OPERATOR_USER,
        "--masterauth",
        f"$({redis.OPERATOR_PASSWORD_ENV})",
        "--min-replicas-to-write",
        str(ha.min_replicas_to_write),
        "--min-replicas-max-lag",
        str(ha.min_replicas_max_lag_seconds),
    ]


def anti_affinity(jq: JobQueue, component: str) -> Manifest | None:
    """The Pods of `component` on different nodes: preferred, required, or not at all (the spec's choice)."""
    term: Manifest = {
        "labelSelector": {"matchLabels": naming.selector_labels(jq, component)},
        "topologyKey": HOSTNAME_KEY,
    }
    choice = managed(jq).high_availability.pod_anti_affinity
    if choice == "preferred":
        return {
            "podAntiAffinity": {
                "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 100, "podAffinityTerm": term}]
            }
        }
    if choice == "required":
        return {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [term]}}
    return None


def startup_probe(seconds: int, port: str) -> Manifest:
    """Liveness waits until the container listens on `port`, for up to `seconds`."""
    return {
        "tcpSocket": {"port": port},
        "periodSeconds": STARTUP_PERIOD_SECONDS,
        "failureThreshold": math.ceil(seconds / STARTUP_PERIOD_SECONDS),
    }


def statefulset(jq: JobQueue) -> Manifest:
    broker = managed(jq)
    ha = broker.high_availability
    manifest = redis.statefulset(jq)
    spec = manifest["spec"]
    spec["replicas"] = SENTINEL_MEMBERS
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    container["command"] = ["sh", "-c", bootstrap.MEMBER_SCRIPT, "redis-member"]
    container["args"] = args(broker)
    container["env"] = [
        *container["env"],
        field_env(POD_NAME_ENV, "metadata.name"),
        {
            "name": bootstrap.Env.MEMBER,
            "value": f"$({POD_NAME_ENV}).{pod_domain(jq, naming.redis(jq.name))}:{redis.PORT}",
        },
        {"name": bootstrap.Env.MEMBERS, "value": " ".join(member_addresses(jq))},
        {"name": bootstrap.Env.SENTINELS, "value": " ".join(sentinel_addresses(jq))},
        {"name": bootstrap.Env.NAMED_MASTER_WAIT, "value": str(named_master_wait_seconds(ha))},
    ]
    container["startupProbe"] = startup_probe(named_master_wait_seconds(ha) + LOADING_ALLOWANCE_SECONDS, "redis")
    container["livenessProbe"] = {
        "exec": {"command": ["sh", "-c", bootstrap.MEMBER_LIVENESS]},
        "periodSeconds": LIVENESS_PERIOD_SECONDS,
        "timeoutSeconds": LIVENESS_PERIOD_SECONDS,
        "failureThreshold": LIVENESS_FAILURES,
    }
    affinity = anti_affinity(jq, naming.BROKER)
    if affinity is not None:
        pod["affinity"] = affinity
    return manifest


def headless_service(jq: JobQueue, name: str, component: str, port_name: str, port: int) -> Manifest:
    """A headless Service that names each Pod of a StatefulSet, ready or not (the members and Sentinels must
    reach a peer that is still starting)."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(jq, name, component),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": True,
            "selector": naming.selector_labels(jq, component),
            "ports": [{"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}],
        },
    }


def service(jq: JobQueue) -> Manifest:
    """`<jq>-redis`, headless: the StatefulSet's `serviceName`, so the Pods' names resolve."""
    return headless_service(jq, naming.redis(jq.name), naming.BROKER, "redis", redis.PORT)


def disruption_budget(jq: JobQueue, name: str, component: str) -> Manifest:
    """At most one Pod of `component` evicted at a time (the Sentinels: a quorum of two stays)."""
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": metadata(jq, name, component),
        "spec": {
            "maxUnavailable": MAX_UNAVAILABLE,
            "selector": {"matchLabels": naming.selector_labels(jq, component)},
        },
    }


def member_budget(jq: JobQueue) -> Manifest:
    return disruption_budget(jq, naming.redis(jq.name), naming.BROKER)
