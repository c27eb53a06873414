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
    master_name_env,
    metadata,
    restricted_pod,
    secret_env,
    with_config_hash,
)
from jobqueue_operator.models import JobQueue
from jobqueue_worker.contract import SENTINEL_MASTER_NAME, Env

PORT: Final = 5555
FLOWER_UID: Final = 10001
"""Flower's image names its user (the kubelet cannot check a name is not root): run as a numeric one."""

SCRIPT: Final = f"""\
import os, sys
from urllib.parse import unquote, urlsplit
from celery import Celery
url = os.environ["{Env.BROKER_URL}"]
app = Celery(broker=url)
if url.startswith("sentinel://"):
    password = urlsplit(url.split(";")[0]).password
    app.conf.broker_transport_options = {{
        "master_name": os.environ.get("{Env.BROKER_MASTER_NAME}") or "{SENTINEL_MASTER_NAME}",
        "sentinel_kwargs": {{"password": unquote(password) if password else None}},
    }}
sys.exit(app.start(sys.argv[1:]))
"""
"""Flower's command, `celery flower` with the transport options a sentinel:// broker needs: kombu's Sentinel
transport and Flower's own queue-length reader (`flower.utils.broker.RedisSentinel`) take the master name and
the Sentinels' password from `broker_transport_options`, which no option or variable of `celery` sets.
Flower's image has Celery but not the worker package, so this is the one place outside it that reads a
sentinel:// URL's password (as `jobqueue_worker.app.sentinel_options` does) and the master name (as the
worker does: JOBQUEUE_BROKER_MASTER_NAME, else contract.SENTINEL_MASTER_NAME)."""


def deployment(jq: JobQueue, config: Config | None = None) -> Manifest:
    secret, key = broker_url_ref(jq)
    probe: Manifest = {"httpGet": {"path": "/healthcheck", "port": "http"}, "periodSeconds": 10}
    container: Manifest = {
        "name": "flower",
        "image": jq.spec.flower.image,
        "command": ["python", "-c", SCRIPT],
        "args": ["flower", f"--port={PORT}"],
        "env": [secret_env(Env.BROKER_URL, secret, key), master_name_env(jq)],
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
