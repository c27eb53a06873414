"""One worker Deployment per queue, configured through the env of docs/worker-contract.md, and the
PodDisruptionBudget that paces how many of its Pods a drain may take at once.

Shutdown, one fact in one place: the Pod's terminationGracePeriodSeconds (`termination_grace`) and the
worker's deadline for handing unfinished tasks back (`shutdown_deadline`, env
JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS) are both computed here, the deadline `HAND_BACK_SECONDS` short of the
kubelet's SIGKILL, so the worker cancels and requeues what still runs while it can."""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any, Final

from jobqueue_operator import naming
from jobqueue_operator.build.common import (
    RESTRICTED_CONTAINER,
    TERMINATION_MESSAGE_POLICY,
    Config,
    Manifest,
    broker_url_ref,
    field_env,
    master_name_env,
    metadata,
    placement,
    resources,
    restricted_pod,
    secret_env,
    user_env,
    user_env_from,
    with_config_hash,
)
from jobqueue_operator.models import JobQueue, Queue, parse_quantity
from jobqueue_worker.contract import (
    DEFAULT_PRIORITY_STEPS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    METRICS_PORT,
    METRICS_PORT_NAME,
    WORKER_COMMAND,
    Env,
    priority_steps,
)

SCRAPE_ANNOTATIONS: Final = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
"""For a Prometheus that discovers Pods by annotation (the chart's PodMonitor selects them by label)."""
GRACE_BEYOND_TIME_LIMIT: Final = 30
GRACE_WITHOUT_TIME_LIMIT: Final = 300
HAND_BACK_SECONDS: Final = 10
"""Of the grace period, what the worker keeps for cancelling its running tasks, requeueing their messages,
unregistering and exiting (about a second; the rest is room for a loaded node)."""
HOSTNAME_KEY: Final = "kubernetes.io/hostname"
UNHEALTHY_POD_EVICTION_POLICY: Final = "AlwaysAllow"
"""A worker Pod that is not Ready (crash-looping, still starting, cut off from Redis) serves nothing: its
eviction never waits for the budget, so a drain is not held up by a broken Pod."""
MEMORY_SHARE_OF_CHILDREN: Final = Decimal("0.8")
"""Of the memory limit, the share prefork children may use before they are replaced."""


def live_priority_steps(deployment: Mapping[str, Any]) -> list[int]:
    """The priority steps a live worker Deployment's workers use (its env), for a queue that left the spec."""
    for container in ((deployment.get("spec") or {}).get("template") or {}).get("spec", {}).get("containers") or []:
        for var in container.get("env") or []:
            if var.get("name") == Env.PRIORITY_STEPS and var.get("value"):
                try:
                    return [int(step) for step in str(var["value"]).split(",")]
                except ValueError:
                    break
    return list(DEFAULT_PRIORITY_STEPS)


def max_memory_per_child_kib(queue: Queue) -> int:
    """--max-memory-per-child in KiB: the queue's own, else a share of the memory limit; 0 is unlimited."""
    if queue.max_memory_per_child is not None:
        return int(parse_quantity(queue.max_memory_per_child) // 1024)
    limit = queue.resources.limits.get("memory") if queue.resources else None
    if limit is None or queue.pool != "prefork":
        return 0
    return int(parse_quantity(limit) * MEMORY_SHARE_OF_CHILDREN / queue.concurrency // 1024)


def visibility_timeout(queue: Queue) -> int:
    """The broker's redelivery timeout: the queue's own, else longer than any task may run."""
    if queue.visibility_timeout_seconds is not None:
        return queue.visibility_timeout_seconds
    return max(DEFAULT_VISIBILITY_TIMEOUT_SECONDS, 2 * (queue.time_limit_seconds or 0))


def termination_grace(queue: Queue) -> int:
    """Long enough for a warm shutdown to let the longest task finish (its time limit, and a margin), at
    most the queue's maxShutdownSeconds: a drain or a rollout waits no longer than that for one Pod."""
    wanted = (
        queue.time_limit_seconds + GRACE_BEYOND_TIME_LIMIT if queue.time_limit_seconds else GRACE_WITHOUT_TIME_LIMIT
    )
    return min(wanted, queue.max_shutdown_seconds)


def shutdown_deadline(queue: Queue) -> int:
    """Seconds after SIGTERM at which the worker hands back the tasks still running: just before SIGKILL."""
    return termination_grace(queue) - HAND_BACK_SECONDS


def spread(jq: JobQueue, queue: Queue) -> list[Manifest]:
    """The worker Pods' topologySpreadConstraints: the spec's own (an empty list: none), else one Pod per
    node in turn (maxSkew 1 over the hostname) among the Pods of the same rollout (`pod-template-hash`), as
    a preference only (ScheduleAnyway): a one-node cluster, or nodes that are full, still run every Pod."""
    if jq.spec.topology_spread_constraints is not None:
        return [dict(constraint) for constraint in jq.spec.topology_spread_constraints]
    return [
        {
            "maxSkew": 1,
            "topologyKey": HOSTNAME_KEY,
            "whenUnsatisfiable": "ScheduleAnyway",
            "labelSelector": {"matchLabels": naming.selector_labels(jq, naming.WORKER, queue.name)},
            "matchLabelKeys": ["pod-template-hash"],
        }
    ]


def initial_replicas(queue: Queue) -> int:
    """The replicas a new worker Deployment starts with, the fewest the queue asks for (autoscaled:
    minReplicas; else `replicas`, 1)."""
    if queue.autoscaling is not None and queue.autoscaling.enabled:
        return queue.autoscaling.min_replicas
    return 1 if queue.replicas is None else queue.replicas


def env(jq: JobQueue, queue: Queue) -> list[Manifest]:
    secret, key = broker_url_ref(jq)
    results = jq.spec.results
    values = {
        Env.APP: jq.spec.app,
        Env.NAME: jq.name,
        Env.QUEUE: queue.name,
        Env.RESULT_EXPIRES_SECONDS: results.expires_seconds,
        Env.CONCURRENCY: queue.concurrency,
        Env.POOL: queue.pool,
        Env.PREFETCH_MULTIPLIER: queue.prefetch_multiplier,
        Env.MAX_TASKS_PER_CHILD: queue.max_tasks_per_child,
        Env.MAX_MEMORY_PER_CHILD_KB: max_memory_per_child_kib(queue),
        Env.SOFT_TIME_LIMIT_SECONDS: queue.soft_time_limit_seconds or 0,
        Env.TIME_LIMIT_SECONDS: queue.time_limit_seconds or 0,
        Env.VISIBILITY_TIMEOUT_SECONDS: visibility_timeout(queue),
        Env.PRIORITY_STEPS: ",".join(str(step) for step in priority_steps(queue.priority_levels)),
        Env.METRICS_PORT: METRICS_PORT,
        Env.DEAD_LETTER_ENABLED: str(queue.dead_letter.enabled).lower(),
        Env.DEAD_LETTER_MAX_LENGTH: queue.dead_letter.max_length,
        Env.MAX_WORKER_LOSSES: queue.dead_letter.max_worker_losses,
        Env.SOFT_SHUTDOWN_TIMEOUT_SECONDS: shutdown_deadline(queue),
    }
    variables = [
        secret_env(Env.BROKER_URL, secret, key),
        master_name_env(jq),
        *({"name": name, "value": str(value)} for name, value in values.items()),
    ]
    if results.backend_secret_ref is not None:
        ref = results.backend_secret_ref
        variables.append(secret_env(Env.RESULT_BACKEND, ref.name, ref.key))
    return [
        *variables,
        field_env(Env.POD_NAME, "metadata.name"),
        field_env(Env.POD_NAMESPACE, "metadata.namespace"),
        field_env(Env.POD_UID, "metadata.uid"),
        *user_env(jq),
    ]


def deployment_name(jq: JobQueue, queue: Queue) -> str:
    return naming.worker_deployment(jq.name, queue.name)


def deployment(jq: JobQueue, queue: Queue, with_replicas: bool = True, config: Config | None = None) -> Manifest:
    """The worker Deployment of `queue`. Without `with_replicas` the manifest leaves `replicas` out: once
    the autoscaler owns that field, the reconciler's apply must neither set it nor take it back."""
    container: Manifest = {
        "name": "worker",
        "image": jq.spec.image,
        "imagePullPolicy": jq.spec.image_pull_policy,
        "command": list(WORKER_COMMAND),
        "env": env(jq, queue),
        "ports": [{"name": METRICS_PORT_NAME, "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": METRICS_PORT_NAME},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": METRICS_PORT_NAME},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
        },
        "resources": resources(queue.resources),
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    env_from = user_env_from(jq)
    if env_from:
        container["envFrom"] = env_from
    real_name = naming.queue_annotations(queue.name)  # none for a DNS-label name: its objects stay as they were
    spec: Manifest = {
        "selector": {"matchLabels": naming.selector_labels(jq, naming.WORKER, queue.name)},
        "template": {
            "metadata": {
                "labels": naming.labels(jq, naming.WORKER, queue.name),
                "annotations": {**SCRAPE_ANNOTATIONS, **real_name},
            },
            "spec": {
                **placement(jq),
                **({"topologySpreadConstraints": constraints} if (constraints := spread(jq, queue)) else {}),
                "containers": [container],
                "securityContext": restricted_pod(),
                "terminationGracePeriodSeconds": termination_grace(queue),
            },
        },
    }
    if with_replicas:
        spec = {"replicas": initial_replicas(queue), **spec}
    meta = metadata(jq, deployment_name(jq, queue), naming.WORKER, queue.name)
    if real_name:
        meta["annotations"] = dict(real_name)
    manifest = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta, "spec": spec}
    return with_config_hash(manifest, config or {})


def budget_limit(queue: Queue) -> Manifest:
    """The budget's one number: `disruption.maxUnavailable` when set. Unset, an autoscaled queue with
    `minReplicas` >= 1 keeps one serving (`minAvailable: 1`): a drain may evict its only worker once a
    replacement is Ready elsewhere, which the autoscaler's drain surge starts (scaling/decide.py
    `with_surge`). Any other queue is drained one worker at a time (`maxUnavailable: 1`): nothing would
    start a replacement for a fixed one-replica queue, and `minAvailable` would block its drain for good."""
    if queue.disruption.max_unavailable is not None:
        return {"maxUnavailable": queue.disruption.max_unavailable}
    return {"minAvailable": 1} if queue.autoscaled and initial_replicas(queue) >= 1 else {"maxUnavailable": 1}


def disruption_budget(jq: JobQueue, queue: Queue) -> Manifest:
    """The PodDisruptionBudget of `queue`'s workers (`budget_limit`); Pods that are not Ready are always
    evictable. Named like the Deployment, owned by the JobQueue like it."""
    meta = metadata(jq, deployment_name(jq, queue), naming.WORKER, queue.name)
    real_name = naming.queue_annotations(queue.name)
    if real_name:
        meta["annotations"] = dict(real_name)
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": meta,
        "spec": {
            **budget_limit(queue),
            "selector": {"matchLabels": naming.selector_labels(jq, naming.WORKER, queue.name)},
            "unhealthyPodEvictionPolicy": UNHEALTHY_POD_EVICTION_POLICY,
        },
    }
