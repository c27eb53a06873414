"""Every kopf decorator of the operator. Thin: kopf watches, the controller (controller.py) schedules.

kopf delivers the JobQueues and the children the operator made (Deployments, StatefulSets,
PodDisruptionBudgets, Pods, by the managed-by label); each event only tells the controller what changed. No
handler needs a finalizer, so a JobQueue is deleted by the garbage collector's usual means whether the
operator runs or not.
"""

from __future__ import annotations

import copy
import logging
import os
import socket
from typing import Any, Final

import kopf

from jobqueue_operator import election, events, kube, leader, metrics, models, naming
from jobqueue_operator.reasons import Reason
from jobqueue_operator.runtime import Runtime
from jobqueue_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)
RESOURCE: Final = (models.GROUP, models.VERSION, models.PLURAL)
OURS: Final = {naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME}


def _runtime(memo: kopf.Memo) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    chosen: OperatorSettings = memo.get("settings") or OperatorSettings.from_environment()
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=models.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=models.GROUP)
    settings.persistence.finalizer = f"{models.GROUP}/finalizer"
    settings.posting.enabled = False  # the operator posts its own Events (kube.post_event)
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    registry = metrics.OperatorMetrics()
    if chosen.metrics_port:
        try:
            memo["metrics_server"] = metrics.serve(registry, chosen.metrics_port, chosen.metrics_address)
        except OSError as exc:  # reconciling matters more than exporting: run on, loudly
            logger.error("cannot serve /metrics on %s:%s: %s", chosen.metrics_address, chosen.metrics_port, exc)
    client = kube.Kube.from_environment()
    runtime = Runtime(client, registry, chosen)
    memo["runtime"] = runtime
    if not chosen.leader_election:
        registry.leader.set(1)
        runtime.start()
        return
    identity = election.identity(os.environ, socket.gethostname(), os.getpid())

    def lead() -> None:
        """This process holds the Lease: from now on it writes (reconciles, ticks, Events, status)."""
        registry.leader.set(1)
        runtime.start()
        client.post_event(elector.lease(), events.Event("Normal", Reason.LEADER_ELECTION, f"{identity} became leader"))

    timing = (chosen.lease_duration_seconds, chosen.renew_deadline_seconds, chosen.retry_period_seconds)
    elector = leader.Elector(client.api, chosen.lease_name, chosen.lease_namespace, identity, timing, lead)
    memo["elector"] = elector
    elector.start()


@kopf.on.cleanup()
def stop(memo: kopf.Memo, **_: Any) -> None:
    if "runtime" in memo:
        _runtime(memo).stop()
    if "elector" in memo:  # after the last write: a standby may take over at once
        memo["elector"].release()
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()


@kopf.on.event(*RESOURCE)
def jobqueue_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A JobQueue listed, added, modified or deleted."""
    controller = _runtime(memo).controller
    if event["type"] == "DELETED":
        controller.jobqueue_gone(body.metadata.namespace or "", body.metadata.name or "")
    else:
        controller.jobqueue_seen(copy.deepcopy(dict(body)))


@kopf.on.event("", "v1", "secrets")
@kopf.on.event("", "v1", "configmaps")
def reference_changed(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A Secret or ConfigMap changed: the JobQueues whose Pods read it reconcile (their Pods roll when the
    values they read changed, and a fixed broker Secret clears the condition at once)."""
    kind = "Secret" if body.get("kind") == "Secret" else "ConfigMap"
    _runtime(memo).controller.reference_changed(body.metadata.namespace or "", kind, body.metadata.name or "")


@kopf.on.event("apps", "v1", "deployments", labels=OURS)
@kopf.on.event("apps", "v1", "statefulsets", labels=OURS)
@kopf.on.event("policy", "v1", "poddisruptionbudgets", labels=OURS)
@kopf.on.event("", "v1", "pods", labels=OURS)
def child_changed(event: kopf.RawEvent, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A child changed: its JobQueue's status follows within a fraction of a second. A worker Pod that is
    gone also wakes the autoscaler's tick, which puts the dead worker's tasks back on their queue."""
    jobqueue = body.metadata.labels.get(naming.JOBQUEUE_LABEL)
    if not jobqueue:
        return
    key = (body.metadata.namespace or "", jobqueue)
    controller = _runtime(memo).controller
    controller.poke(key, "reconcile")
    if event["type"] == "DELETED" and body.get("kind") == "Pod":
        controller.poke(key, "tick", 0.0)
