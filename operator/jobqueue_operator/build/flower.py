"""Flower, Celery's monitoring UI: a Deployment and a Service on port 5555."""

from __future__ import annotations

from typing import Final

from jobqueue_operator import naming
from jobqueue_operator.build import common
from jobqueue_operator.build.common import (
    RESTRICTED_CONTAINER,
    TERMINATION_MESSAGE_POLICY,
    Config,
    Manifest,
    broker_url_ref,
    metadata,
    restricted_pod,
    secret_env,
    with_config_hash,
)
from jobqueue_operator.models import JobQueue

PORT: Final = 5555
FLOWER_UID: Final = 10001
"""Flower's image names its user (the kubelet cannot check a name is not root): run as a numeric one."""


def deployment(jq: JobQueue, config: Config | None = None) -> Manifest:
    secret, key = broker_url_ref(jq)
    probe: Manifest = {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10}
    container: Manifest = {
        "name": "flower",
        "image": jq.spec.flower.image,
        "command": ["celery"],
        "args": ["--broker", "$(JOBQUEUE_BROKER_URL)", "flower", f"--port={PORT}"],
        "env": [secret_env("JOBQUEUE_BROKER_URL", secret, key)],
        "ports": [{"name": "http", "containerPort": PORT, "protocol": "TCP"}],
        "readinessProbe": probe,
        "livenessProbe": {**probe, "failureThreshold": 6},
        "securityContext": RESTRICTED_CONTAINER,
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
    }
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(jq, naming.flower(jq.name), naming.FLOWER),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": naming.selector_labels(jq, naming.FLOWER)},
            "template": {
                "metadata": {"labels": naming.labels(jq, naming.FLOWER)},
                "spec": {"containers": [container], "securityContext": restricted_pod(FLOWER_UID)},
            },
        },
    }
    return with_config_hash(manifest, config or {})


def service(jq: JobQueue) -> Manifest:
    return common.service(jq, naming.flower(jq.name), naming.FLOWER, "http", PORT)
