"""Everything one JobQueue should own, in the order to apply it."""

from __future__ import annotations

from collections.abc import Collection

from jobqueue_operator.build import beat, flower, redis, redis_ha, sentinel, workers
from jobqueue_operator.build.common import Config, Manifest
from jobqueue_operator.models import JobQueue


def desired(jq: JobQueue, config: Config | None = None, without_replicas: Collection[str] = ()) -> list[Manifest]:
    """The children of `jq` except the broker's password Secret (created once, see reconcile).

    `config`: the Secrets and ConfigMaps the Pods read (their values' hash rolls the Pods when they change).
    `without_replicas`: worker Deployments whose `replicas` the autoscaler owns, left out of their manifests.
    """
    config = config or {}
    objects: list[Manifest] = []
    if redis.high_availability(jq):
        objects += [
            redis_ha.service(jq),
            redis_ha.statefulset(jq),
            redis_ha.member_budget(jq),
            sentinel.headless_service(jq),
            sentinel.service(jq),
            sentinel.statefulset(jq),
            sentinel.disruption_budget(jq),
        ]
    elif jq.spec.broker.managed is not None:
        objects += [redis.service(jq), redis.statefulset(jq)]
    for queue in jq.spec.queues:
        name = workers.deployment_name(jq, queue)
        objects.append(workers.deployment(jq, queue, name not in without_replicas, config))
        objects.append(workers.disruption_budget(jq, queue))
    if jq.spec.beat.enabled:
        objects.append(beat.deployment(jq, config))
    if jq.spec.flower.enabled:
        objects += [flower.service(jq), flower.deployment(jq, config)]
    return objects
