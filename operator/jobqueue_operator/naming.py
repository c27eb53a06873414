"""Names, labels and annotation keys of everything the operator creates.

Child names are deterministic (so a restarted operator finds what it made) and at most 63 characters:
a name that would be longer is cut and given a short hash of the full name, so two long names never
collide after truncation.
"""

from __future__ import annotations

import hashlib
from typing import Final

from jobqueue_operator.models import JobQueue

MAX_NAME: Final = 63
FIELD_MANAGER: Final = "jobqueue-operator"
"""The reconciler's server-side apply field manager."""
AUTOSCALER_FIELD_MANAGER: Final = "jobqueue-autoscaler"
"""The autoscaler's: it owns the worker replicas and the status fields it writes."""
OPERATOR_NAME: Final = "jobqueue-operator"

# Label keys.
NAME_LABEL: Final = "app.kubernetes.io/name"
INSTANCE_LABEL: Final = "app.kubernetes.io/instance"
COMPONENT_LABEL: Final = "app.kubernetes.io/component"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
PART_OF_LABEL: Final = "app.kubernetes.io/part-of"
PART_OF: Final = "jobqueue"
"""The `part-of` value of everything the operator and its chart create (the chart's _helpers.tpl says it too)."""
JOBQUEUE_LABEL: Final = "jobqueue.dev/jobqueue"
QUEUE_LABEL: Final = "jobqueue.dev/queue"

# Annotation keys.
APPLIED_HASH_ANNOTATION: Final = "jobqueue.dev/applied-hash"
"""On each child: the hash of the manifest last applied, so an unchanged child is not applied again."""
CONFIG_HASH_ANNOTATION: Final = "jobqueue.dev/config-hash"
"""On each Pod template: the hash of the Secret and ConfigMap values its env reads (rolls the Pods on change)."""

# Component values.
WORKER: Final = "worker"
BROKER: Final = "broker"
BEAT: Final = "beat"
FLOWER: Final = "flower"

# Keys of the managed broker's Secret.
PASSWORD_KEY: Final = "password"
URL_KEY: Final = "url"


def bounded(name: str, limit: int = MAX_NAME) -> str:
    """`name` when it fits in `limit` characters; else its head plus an 8-character hash of the whole."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


def worker_deployment(jobqueue: str, queue: str) -> str:
    return bounded(f"{jobqueue}-{queue}-worker")


def redis(jobqueue: str) -> str:
    """The managed broker's StatefulSet and Service (the Service name is its DNS name)."""
    return bounded(f"{jobqueue}-redis")


def redis_secret(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-redis-auth")


def beat(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-beat")


def flower(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-flower")


def selector_labels(jq: JobQueue, component: str, queue: str | None = None) -> dict[str, str]:
    """The labels a child's selector matches: stable for the child's lifetime."""
    labels = {
        NAME_LABEL: "jobqueue",
        INSTANCE_LABEL: jq.name,
        COMPONENT_LABEL: component,
        JOBQUEUE_LABEL: jq.name,
    }
    if queue is not None:
        labels[QUEUE_LABEL] = queue
    return labels


def labels(jq: JobQueue, component: str, queue: str | None = None) -> dict[str, str]:
    """Every label of a child and of its Pods."""
    return {
        **selector_labels(jq, component, queue),
        MANAGED_BY_LABEL: OPERATOR_NAME,
        PART_OF_LABEL: PART_OF,
    }


def children_selector(jobqueue: str) -> str:
    """A label selector matching every child of one JobQueue."""
    return f"{JOBQUEUE_LABEL}={jobqueue},{MANAGED_BY_LABEL}={OPERATOR_NAME}"
