"""Invalid JobQueues the API server refuses, each with a message that names the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml

from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, VERSION

pytestmark = pytest.mark.usefixtures("crd")

VALID: dict[str, Any] = {
    "apiVersion": f"{GROUP}/{VERSION}",
    "kind": "JobQueue",
    "metadata": {"name": "invalid"},
    "spec": {"image": "example.invalid/w:1", "app": "tasks.app", "queues": [{"name": "q"}]},
}


def _spec(**fields: Any) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    document["spec"].update(fields)
    return document


def _queue(**fields: Any) -> dict[str, Any]:
    return _spec(queues=[{"name": "q", **fields}])


def _without(field: str) -> dict[str, Any]:
    document = copy.deepcopy(VALID)
    del document["spec"][field]
    return document


CASES: list[tuple[str, dict[str, Any], str]] = [
    ("no-image", _without("image"), "spec.image: Required value"),
    ("no-app", _without("app"), "spec.app: Required value"),
    ("no-queues", _without("queues"), "spec.queues: Required value"),
    ("empty-queues", _spec(queues=[]), "spec.queues: Invalid value"),
    ("bad-app", _spec(app="not a module"), "spec.app: Invalid value"),
    ("duplicate-queue", _spec(queues=[{"name": "q"}, {"name": "q"}]), "spec.queues[1]: Duplicate value"),
    ("queue-space", _queue(name="a b"), "spec.queues[0].name: Invalid value"),
    ("queue-not-ascii", _queue(name="vidéo"), "spec.queues[0].name: Invalid value"),
    ("queue-too-long", _queue(name="q" * 201), "spec.queues[0].name: Too long"),
    ("queue-unacked", _queue(name="unacked"), "spec.queues[0].name: Invalid value"),
    ("queue-kombu-key", _queue(name="_kombu.binding.celery"), "spec.queues[0].name: Invalid value"),
    ("queue-operator-key", _queue(name="jobqueue:workers"), "spec.queues[0].name: Invalid value"),
    ("concurrency-zero", _queue(concurrency=0), "spec.queues[0].concurrency: Invalid value"),
    ("concurrency-huge", _queue(concurrency=257), "spec.queues[0].concurrency: Invalid value"),
    ("pool-unknown", _queue(pool="fork"), "spec.queues[0].pool: Unsupported value"),
    ("negative-time-limit", _queue(timeLimitSeconds=-1), "spec.queues[0].timeLimitSeconds: Invalid value"),
    ("soft-after-hard", _queue(softTimeLimitSeconds=60, timeLimitSeconds=30), "spec.queues[0].softTimeLimitSeconds"),
    (
        "visibility-under-limit",
        _queue(timeLimitSeconds=600, visibilityTimeoutSeconds=300),
        "spec.queues[0].visibilityTimeoutSeconds",
    ),
    (
        "min-above-max",
        _queue(autoscaling={"minReplicas": 5, "maxReplicas": 2}),
        "spec.queues[0].autoscaling.minReplicas",
    ),
    ("replicas-and-autoscaling", _queue(replicas=2, autoscaling={}), "spec.queues[0].replicas"),
    (
        "prometheus-without-scheme",
        _queue(autoscaling={"prometheus": {"serverAddress": "prometheus:9090", "query": "up"}}),
        "spec.queues[0].autoscaling.prometheus.serverAddress: Invalid value",
    ),
    (
        "prometheus-without-query",
        _queue(autoscaling={"prometheus": {"serverAddress": "http://prometheus:9090"}}),
        "spec.queues[0].autoscaling.prometheus.query: Required value",
    ),
    (
        "prometheus-empty-query",
        _queue(autoscaling={"prometheus": {"serverAddress": "http://prometheus:9090", "query": ""}}),
        "spec.queues[0].autoscaling.prometheus.query: Invalid value",
    ),
    ("bad-memory-quantity", _queue(resources={"limits": {"memory": "lots"}}), "spec.queues[0].resources.limits.memory"),
    ("bad-max-memory", _queue(maxMemoryPerChild="1 GB"), "spec.queues[0].maxMemoryPerChild"),
    ("max-memory-threads", _queue(pool="threads", maxMemoryPerChild="100Mi"), "spec.queues[0].maxMemoryPerChild"),
    ("prefetch-zero", _queue(prefetchMultiplier=0), "spec.queues[0].prefetchMultiplier: Invalid value"),
    ("priority-levels", _queue(priorityLevels=11), "spec.queues[0].priorityLevels: Invalid value"),
    (
        "two-brokers",
        _spec(broker={"managed": {}, "external": {"urlSecretRef": {"name": "s", "key": "url"}}}),
        "spec.broker: Invalid value",
    ),
    ("no-broker", _spec(broker={}), "spec.broker: Invalid value"),
    (
        "external-no-key",
        _spec(broker={"external": {"urlSecretRef": {"name": "s"}}}),
        "spec.broker.external.urlSecretRef.key",
    ),
    ("pull-policy", _spec(imagePullPolicy="Sometimes"), "spec.imagePullPolicy: Unsupported value"),
    ("reserved-env", _spec(env=[{"name": "JOBQUEUE_QUEUE", "value": "x"}]), "spec.env: Invalid value"),
    ("duplicate-env", _spec(env=[{"name": "A"}, {"name": "A"}]), "spec.env[1]: Duplicate value"),
    (
        "persistence-size",
        _spec(broker={"managed": {"persistence": {"size": "big"}}}),
        "spec.broker.managed.persistence.size",
    ),
    ("result-expires", _spec(results={"expiresSeconds": -5}), "spec.results.expiresSeconds: Invalid value"),
    ("unknown-toleration-op", _spec(tolerations=[{"operator": "Maybe"}]), "spec.tolerations[0].operator"),
]


def test_there_are_at_least_twenty_cases() -> None:
    assert len(CASES) >= 20


@pytest.mark.parametrize(("case", "document", "field"), CASES, ids=[c[0] for c in CASES])
def test_refused_with_the_field_named(
    case: str, document: dict[str, Any], field: str, kubectl: Kubectl, namespace: str
) -> None:
    result = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(document), check=False
    )
    assert result.returncode != 0, f"{case} was accepted"
    assert field in result.stderr, result.stderr


def test_a_long_name_is_refused(kubectl: Kubectl, namespace: str) -> None:
    document = copy.deepcopy(VALID)
    document["metadata"]["name"] = "x" * 64
    result = kubectl(
        "apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(document), check=False
    )
    assert result.returncode != 0
    assert "metadata.name must be a DNS label" in result.stderr


def test_the_valid_base_is_accepted(kubectl: Kubectl, namespace: str) -> None:
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(VALID))
    assert "created (server dry run)" in result.stdout


def test_queue_names_as_celery_apps_write_them_are_accepted(kubectl: Kubectl, namespace: str) -> None:
    names = ["high_priority", "video.transcode", "CamelCase", "Q", "q", "a:b/c@d", "50%off", "x" * 200]
    document = _spec(queues=[{"name": name} for name in names])
    result = kubectl("apply", "--dry-run=server", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))
    assert "created (server dry run)" in result.stdout
