"""Names, labels and annotation keys of everything the operator creates.

Child names are deterministic (so a restarted operator finds what it made) and at most 63 characters:
a name that would be longer is cut and given a short hash of the full name, so two long names never
collide after truncation.

A queue's real name (any name Celery accepts: `high_priority`, `video.transcode`, `CamelCase`) is what the
operator uses with Redis, Celery, metrics and the status; Kubernetes names and label values use its slug
(`queue_slug`), and the real name rides along in an annotation wherever the slug differs from it.

Imports nothing of the operator at run time, so the models can use the slug to refuse two queue names
that would share one worker Deployment.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
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
"""On worker Deployments and their Pods: the queue's slug (a valid label value, for selectors)."""

# Annotation keys.
APPLIED_HASH_ANNOTATION: Final = "jobqueue.dev/applied-hash"
"""On each child: the hash of the manifest last applied, so an unchanged child is not applied again."""
QUEUE_NAME_ANNOTATION: Final = "jobqueue.dev/queue-name"
"""On a worker Deployment and its Pod template whose queue's slug is not its real name: the real name, so
a queue no longer in the spec can still be drained and reported under it."""
CONFIG_HASH_ANNOTATION: Final = "jobqueue.dev/config-hash"
"""On each Pod template: the hash of the Secret and ConfigMap values its env reads (rolls the Pods on change)."""
RESTART_BROKER_ANNOTATION: Final = "jobqueue.dev/restart-broker"
"""On a JobQueue: restart its managed Redis now for a held change, losing the tasks it holds (one shot:
the operator removes it once it has restarted Redis)."""

# Component values.
WORKER: Final = "worker"
BROKER: Final = "broker"
BEAT: Final = "beat"
FLOWER: Final = "flower"
SENTINEL: Final = "sentinel"
"""The Sentinels of a highly available managed broker (its Redis Pods stay `broker`)."""

# Keys of the managed broker's Secret.
PASSWORD_KEY: Final = "password"
URL_KEY: Final = "url"
MASTER_NAME_KEY: Final = "masterName"
"""Highly available managed broker only: the name Sentinel knows the master by (kombu's `master_name`)."""


def bounded(name: str, limit: int = MAX_NAME) -> str:
    """`name` when it fits in `limit` characters; else its head plus an 8-character hash of the whole."""
    if len(name) <= limit:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"{name[: limit - 9].rstrip('-')}-{digest}"


_DNS_LABEL: Final = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
SLUG_HEAD: Final = 40
"""Characters of the sanitized name a slug keeps before its hash (the old limit of a queue name)."""
SLUG_HASH: Final = 8


def queue_slug(queue: str) -> str:
    """The queue's name in Kubernetes object names and label values: a DNS label of at most 49 characters.

    Stable and collision-free: a real name that already is a DNS label is its own slug (so the objects of
    queues named before any other name was allowed keep their names); any other name is lowered, each run of
    other characters becomes `-`, and an 8-character hash of the REAL name is appended, so `a_b` and `a-b`,
    or `Q` and `q`, get different slugs. (A DNS-label name that equals another queue's slug is refused by
    the models.)"""
    if len(queue) <= SLUG_HEAD and _DNS_LABEL.fullmatch(queue):
        return queue
    digest = hashlib.sha256(queue.encode()).hexdigest()[:SLUG_HASH]
    head = re.sub(r"[^a-z0-9]+", "-", queue.lower())[:SLUG_HEAD].strip("-")
    return f"{head}-{digest}" if head else digest


def queue_annotations(queue: str) -> dict[str, str]:
    """The annotations that carry a queue's real name where its slug is not that name (else none, so the
    objects of DNS-label queues are exactly what earlier versions made)."""
    return {} if queue_slug(queue) == queue else {QUEUE_NAME_ANNOTATION: queue}


def queue_of(metadata: Mapping[str, Any]) -> str | None:
    """The real queue name of a worker Deployment or Pod, from its metadata: the annotation, else the
    label (which is the real name whenever there is no annotation); None for other objects."""
    annotated = (metadata.get("annotations") or {}).get(QUEUE_NAME_ANNOTATION)
    return annotated or (metadata.get("labels") or {}).get(QUEUE_LABEL) or None


def worker_deployment(jobqueue: str, queue: str) -> str:
    """The worker Deployment of the queue whose REAL name is `queue`."""
    return bounded(f"{jobqueue}-{queue_slug(queue)}-worker")


def redis(jobqueue: str) -> str:
    """The managed broker's StatefulSet and Service (the Service name is its DNS name)."""
    return bounded(f"{jobqueue}-redis")


def sentinel(jobqueue: str) -> str:
    """A highly available broker's Sentinel StatefulSet and the Service clients reach the Sentinels by."""
    return bounded(f"{jobqueue}-sentinel")


def sentinel_headless(jobqueue: str) -> str:
    """The headless Service that gives each Sentinel Pod a stable DNS name (its StatefulSet's serviceName)."""
    return bounded(f"{jobqueue}-sentinel-headless")


def redis_secret(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-redis-auth")


def redis_operator_secret(jobqueue: str) -> str:
    """The password of the operator's own user on the managed Redis (never the producers')."""
    return bounded(f"{jobqueue}-redis-operator")


def beat(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-beat")


def flower(jobqueue: str) -> str:
    return bounded(f"{jobqueue}-flower")


def selector_labels(jq: JobQueue, component: str, queue: str | None = None) -> dict[str, str]:
    """The labels a child's selector matches: stable for the child's lifetime. `queue`: the real name."""
    labels = {
        NAME_LABEL: "jobqueue",
        INSTANCE_LABEL: jq.name,
        COMPONENT_LABEL: component,
        JOBQUEUE_LABEL: jq.name,
    }
    if queue is not None:
        labels[QUEUE_LABEL] = queue_slug(queue)
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


def queue_selector(jobqueue: str, queue: str) -> str:
    """A label selector matching the worker Pods of one queue (`queue`: the real name)."""
    return f"{children_selector(jobqueue)},{COMPONENT_LABEL}={WORKER},{QUEUE_LABEL}={queue_slug(queue)}"
