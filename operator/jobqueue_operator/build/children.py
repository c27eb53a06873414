"""Everything one JobQueue should own, in the order to apply it."""

from __future__ import annotations

from collections.abc import Mapping

from jobqueue_operator.build import beat, flower, redis, workers
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.models import JobQueue


def desired(jq: JobQueue, current_replicas: Mapping[str, int] | None = None) -> list[Manifest]:
    """The children of `jq` except the broker's password Secret (created once, see reconcile).

    `current_replicas` maps live worker Deployment names to their replicas, which the autoscaler owns.
    """
    current = current_replicas or {}
    objects: list[Manifest] = []
    if jq.spec.broker.managed is not None:
        objects += [redis.service(jq), redis.statefulset(jq)]
    for queue in jq.spec.queues:
        deployment = workers.deployment(jq, queue)
        name = deployment["metadata"]["name"]
        if name in current:
            deployment = workers.deployment(jq, queue, current[name])
        objects.append(deployment)
    if jq.spec.beat.enabled:
        objects.append(beat.deployment(jq))
    if jq.spec.flower.enabled:
        objects += [flower.service(jq), flower.deployment(jq)]
    return objects


def owned_by(manifest: Manifest, owner_api_version: str, owner_kind: str, owner_name: str, owner_uid: str) -> Manifest:
    """`manifest` with a controller owner reference, so deleting the owner deletes it."""
    reference = {
        "apiVersion": owner_api_version,
        "kind": owner_kind,
        "name": owner_name,
        "uid": owner_uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }
    return {**manifest, "metadata": {**manifest["metadata"], "ownerReferences": [reference]}}
