"""Celery beat: one singleton scheduler Deployment. Two schedulers would send every task twice, so
the strategy is Recreate and replicas is 1. It runs `jobqueue-worker beat` (the app's image has the worker
package) rather than `celery beat`: that sets the transport options a sentinel:// broker needs
(`jobqueue_worker.beat`)."""

from __future__ import annotations

from typing import Final

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
    restricted_pod,
    secret_env,
    user_env,
    user_env_from,
    with_config_hash,
)
from jobqueue_operator.models import JobQueue
from jobqueue_worker.contract import WORKER_COMMAND, Env

SCHEDULE_DIR: Final = "/var/run/beat"


def deployment(jq: JobQueue, config: Config | None = None) -> Manifest:
    secret, key = broker_url_ref(jq)
    container: Manifest = {
        "name": "beat",
        "image": jq.spec.image,
        "imagePullPolicy": jq.spec.image_pull_policy,
        "command": [*WORKER_COMMAND, "beat"],
        "args": [
            "--loglevel",
            "INFO",
            "--schedule",
            f"{SCHEDULE_DIR}/celerybeat-schedule",
        ],
        "env": [
            secret_env(Env.BROKER_URL, secret, key),
            master_name_env(jq),
            {"name": Env.APP, "value": jq.spec.app},
            {"name": Env.NAME, "value": jq.name},
            field_env("POD_NAME", "metadata.name"),
            field_env("POD_NAMESPACE", "metadata.namespace"),
            *user_env(jq),
        ],
        "resources": dict(jq.spec.beat.resources or {}),
        "securityContext": {**RESTRICTED_CONTAINER, "readOnlyRootFilesystem": True},
        "terminationMessagePolicy": TERMINATION_MESSAGE_POLICY,
        "volumeMounts": [{"name": "schedule", "mountPath": SCHEDULE_DIR}],
    }
    env_from = user_env_from(jq)
    if env_from:
        container["envFrom"] = env_from
    manifest = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(jq, naming.beat(jq.name), naming.BEAT),
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "selector": {"matchLabels": naming.selector_labels(jq, naming.BEAT)},
            "template": {
                "metadata": {"labels": naming.labels(jq, naming.BEAT)},
                "spec": {
                    **placement(jq),
                    "containers": [container],
                    "securityContext": restricted_pod(),
                    "volumes": [{"name": "schedule", "emptyDir": {}}],
                },
            },
        },
    }
    return with_config_hash(manifest, config or {})
