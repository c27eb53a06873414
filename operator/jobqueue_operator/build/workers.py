"""One worker Deployment per queue, configured through the env of docs/worker-contract.md."""

from __future__ import annotations

from decimal import Decimal
from typing import Final

from jobqueue_operator import naming
from jobqueue_operator.build.common import (
    RESTRICTED_CONTAINER,
    Manifest,
    broker_url_ref,
    field_env,
    metadata,
    placement,
    resources,
    secret_env,
    user_env,
    user_env_from,
)
from jobqueue_operator.models import JobQueue, Queue, parse_quantity

METRICS_PORT: Final = 9808
DEFAULT_VISIBILITY_TIMEOUT: Final = 3600
SCRAPE_ANNOTATIONS: Final = {
    "prometheus.io/scrape": "true",
    "prometheus.io/port": str(METRICS_PORT),
    "prometheus.io/path": "/metrics",
}
"""For a Prometheus that discovers Pods by annotation (the chart's PodMonitor selects them by label)."""
GRACE_BEYOND_TIME_LIMIT: Final = 30
GRACE_WITHOUT_TIME_LIMIT: Final = 300
MEMORY_SHARE_OF_CHILDREN: Final = Decimal("0.8")
"""Of the memory limit, the share prefork children may use before they are replaced."""


def priority_steps(levels: int) -> list[int]:
    """Redis priority steps spread over 0..9: 4 levels give 0, 3, 6, 9 (kombu's default)."""
    if levels == 1:
        return [0]
    return [round(i * 9 / (levels - 1)) for i in range(levels)]


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
    return max(DEFAULT_VISIBILITY_TIMEOUT, 2 * (queue.time_limit_seconds or 0))


def termination_grace(queue: Queue) -> int:
    """Long enough for a warm shutdown to let the longest task finish."""
    if queue.time_limit_seconds:
        return queue.time_limit_seconds + GRACE_BEYOND_TIME_LIMIT
    return GRACE_WITHOUT_TIME_LIMIT


def initial_replicas(queue: Queue) -> int:
    if queue.autoscaling is not None and queue.autoscaling.enabled:
        return queue.autoscaling.min_replicas
    return 1 if queue.replicas is None else queue.replicas


def replicas(queue: Queue, current: int | None) -> int:
    """Replicas to write: the autoscaler owns them once the Deployment exists and autoscaling is on."""
    if queue.autoscaled and current is not None:
        return current
    return initial_replicas(queue)


def env(jq: JobQueue, queue: Queue) -> list[Manifest]:
    secret, key = broker_url_ref(jq)
    results = jq.spec.results
    values = {
        "JOBQUEUE_APP": jq.spec.app,
        "JOBQUEUE_NAME": jq.name,
        "JOBQUEUE_QUEUE": queue.name,
        "JOBQUEUE_RESULT_EXPIRES_SECONDS": results.expires_seconds,
        "JOBQUEUE_CONCURRENCY": queue.concurrency,
        "JOBQUEUE_POOL": queue.pool,
        "JOBQUEUE_PREFETCH_MULTIPLIER": queue.prefetch_multiplier,
        "JOBQUEUE_MAX_TASKS_PER_CHILD": queue.max_tasks_per_child,
        "JOBQUEUE_MAX_MEMORY_PER_CHILD_KB": max_memory_per_child_kib(queue),
        "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS": queue.soft_time_limit_seconds or 0,
        "JOBQUEUE_TIME_LIMIT_SECONDS": queue.time_limit_seconds or 0,
        "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS": visibility_timeout(queue),
        "JOBQUEUE_PRIORITY_STEPS": ",".join(str(step) for step in priority_steps(queue.priority_levels)),
        "JOBQUEUE_METRICS_PORT": METRICS_PORT,
    }
    variables = [
        secret_env("JOBQUEUE_BROKER_URL", secret, key),
        *({"name": name, "value": str(value)} for name, value in values.items()),
    ]
    if results.backend_secret_ref is not None:
        ref = results.backend_secret_ref
        variables.append(secret_env("JOBQUEUE_RESULT_BACKEND", ref.name, ref.key))
    return [
        *variables,
        field_env("POD_NAME", "metadata.name"),
        field_env("POD_NAMESPACE", "metadata.namespace"),
        *user_env(jq),
    ]


def deployment(jq: JobQueue, queue: Queue, current_replicas: int | None = None) -> Manifest:
    """The worker Deployment of `queue`; `current_replicas` is the live Deployment's, if it exists."""
    container: Manifest = {
        "name": "worker",
        "image": jq.spec.image,
        "imagePullPolicy": jq.spec.image_pull_policy,
        "command": ["jobqueue-worker"],
        "env": env(jq, queue),
        "ports": [{"name": "metrics", "containerPort": METRICS_PORT, "protocol": "TCP"}],
        "livenessProbe": {
            "httpGet": {"path": "/healthz", "port": "metrics"},
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 6,
        },
        "readinessProbe": {
            "httpGet": {"path": "/readyz", "port": "metrics"},
            "periodSeconds": 5,
            "timeoutSeconds": 5,
        },
        "resources": resources(queue.resources),
        "securityContext": RESTRICTED_CONTAINER,
    }
    env_from = user_env_from(jq)
    if env_from:
        container["envFrom"] = env_from
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(jq, naming.worker_deployment(jq.name, queue.name), naming.WORKER, queue.name),
        "spec": {
            "replicas": replicas(queue, current_replicas),
            "selector": {"matchLabels": naming.selector_labels(jq, naming.WORKER, queue.name)},
            "template": {
                "metadata": {
                    "labels": naming.labels(jq, naming.WORKER, queue.name),
                    "annotations": dict(SCRAPE_ANNOTATIONS),
                },
                "spec": {
                    **placement(jq),
                    "containers": [container],
                    "securityContext": {"runAsNonRoot": True},
                    "terminationGracePeriodSeconds": termination_grace(queue),
                },
            },
        },
    }
