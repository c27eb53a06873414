"""Flower, Celery's monitoring UI: a Deployment and a Service on port 5555."""

from __future__ import annotations

from typing import Final

from jobqueue_operator import naming
from jobqueue_operator.build import common
from jobqueue_operator.build.common import RESTRICTED_CONTAINER, Manifest, broker_url_ref, metadata, secret_env
from jobqueue_operator.models import JobQueue

PORT: Final = 5555


def deployment(jq: JobQueue) -> Manifest:
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
    }
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(jq, naming.flower(jq.name), naming.FLOWER),
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": naming.selector_labels(jq, naming.FLOWER)},
            "template": {
                "metadata": {"labels": naming.labels(jq, naming.FLOWER)},
                "spec": {"containers": [container]},
            },
        },
    }


def service(jq: JobQueue) -> Manifest:
    return common.service(jq, naming.flower(jq.name), naming.FLOWER, "http", PORT)
