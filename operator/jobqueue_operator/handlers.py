"""Every kopf decorator of the operator. Thin: call the reconciler, post its Events, write its status."""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from typing import Any, Final

import kopf

from jobqueue_operator import kube, metrics, models, naming, reconcile, scaling, status

RESYNC_SECONDS: Final = float(os.environ.get("JOBQUEUE_RESYNC_SECONDS", "30"))
"""How often every JobQueue is reconciled again, to pick up child status and heal drift."""
AUTOSCALE_SECONDS: Final = float(os.environ.get("JOBQUEUE_AUTOSCALE_SECONDS", "5"))
"""How often each JobQueue's queues are measured, exported and scaled."""
METRICS_PORT: Final = int(os.environ.get("JOBQUEUE_METRICS_PORT", "8081"))
"""Port of the operator's /metrics (0: not served)."""
METRICS_ADDRESS: Final = os.environ.get("JOBQUEUE_METRICS_ADDRESS", "0.0.0.0")
MAX_BACKOFF_SECONDS: Final = 300.0

logger = logging.getLogger(__name__)
RESOURCE: Final = (models.GROUP, models.VERSION, models.PLURAL)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def backoff(retry: int) -> float:
    """Seconds before retry number `retry` (0-based): 5, 10, 20 ... up to 5 minutes."""
    return float(min(5.0 * 2**retry, MAX_BACKOFF_SECONDS))


def _client(memo: kopf.Memo) -> kube.Kube:
    client: kube.Kube = memo["kube"]
    return client


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=models.GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix=models.GROUP)
    settings.persistence.finalizer = f"{models.GROUP}/finalizer"
    settings.posting.level = logging.INFO
    settings.posting.reporting_component = "jobqueue-operator"
    settings.execution.max_workers = int(os.environ.get("JOBQUEUE_MAX_WORKERS", "8"))
    settings.watching.server_timeout = 300
    settings.networking.request_timeout = 60
    memo["kube"] = kube.Kube.from_environment()
    memo["metrics"] = metrics.OperatorMetrics()
    if METRICS_PORT:
        try:
            memo["metrics_server"] = metrics.serve(memo["metrics"], METRICS_PORT, METRICS_ADDRESS)
        except OSError as exc:  # reconciling matters more than exporting: run on, loudly
            logger.error("cannot serve /metrics on %s:%s: %s", METRICS_ADDRESS, METRICS_PORT, exc)


@kopf.on.cleanup()
def stop_metrics(memo: kopf.Memo, **_: Any) -> None:
    server = memo.get("metrics_server")
    if server is not None:
        server.shutdown()


def _metrics(memo: kopf.Memo) -> metrics.OperatorMetrics:
    registry: metrics.OperatorMetrics = memo["metrics"]
    return registry


def _memory(memo: kopf.Memo) -> scaling.Memory:
    """The autoscaler's memory of this JobQueue (kopf gives each object its own copy of the memo)."""
    memory: scaling.Memory = memo.setdefault("autoscaler", scaling.Memory())
    return memory


def _export(body: kopf.Body, computed: models.JobQueueStatus, memo: kopf.Memo) -> None:
    """The spec's per-queue targets and the status conditions, as series the alert rules compare against."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    registry = _metrics(memo)
    registry.set_conditions(namespace, name, {c.type: c.status for c in computed.conditions})
    with contextlib.suppress(ValueError):  # an invalid spec: the reconciler reports it
        registry.set_spec(namespace, name, models.JobQueueSpec.model_validate(body.get("spec") or {}))


def _report(body: kopf.Body, outcome: reconcile.Outcome, client: kube.Kube, memo: kopf.Memo) -> None:
    _export(body, outcome.status, memo)
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    # With the autoscaler's last view of the queues, so this write does not undo the tick's.
    computed = status.with_backlog(outcome.status, _memory(memo).backlog).to_body()
    patch = scaling.clear_backlog(body.get("status") or {}, computed)
    client.patch_status(body.metadata.namespace or "", body.metadata.name or "", patch)


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def reconcile_jobqueue(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Converge the children to the spec; retried with back-off while something is missing or failing."""
    client = _client(memo)
    with _metrics(memo).reconcile_seconds.time():
        outcome = reconcile.reconcile(client, body, _now())
    _report(body, outcome, client, memo)
    if outcome.retry is not None:
        raise kopf.TemporaryError(outcome.retry, delay=backoff(retry))


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered convergence: child status into the JobQueue's status, drift undone."""
    client = _client(memo)
    with _metrics(memo).reconcile_seconds.time():
        outcome = reconcile.reconcile(client, body, _now())
    # Warnings repeat on every pass while a problem lasts: post them only when Ready changes.
    ready_changed = _ready(body.get("status") or {}) != _ready(outcome.status.to_body())
    outcome.events = [e for e in outcome.events if e.type == "Normal" or ready_changed]
    _report(body, outcome, client, memo)
    _count_worker_restarts(body, client, memo)


def _count_worker_restarts(body: kopf.Body, client: kube.Kube, memo: kopf.Memo) -> None:
    """Worker container restarts and OOM kills, from the worker Pods' status (metrics.py counts them)."""
    namespace, name = body.metadata.namespace or "", body.metadata.name or ""
    selector = f"{naming.children_selector(name)},{naming.COMPONENT_LABEL}={naming.WORKER}"
    try:
        pods = client.pods(namespace, selector)
    except kube.KubeError as exc:
        logger.info("JobQueue %s/%s: worker Pods not read for restart counts: %s", namespace, name, exc)
        return
    _metrics(memo).observe_worker_pods(namespace, name, pods)


@kopf.timer(*RESOURCE, interval=AUTOSCALE_SECONDS, initial_delay=AUTOSCALE_SECONDS, sharp=True)
def autoscale(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Measure every queue, export the metrics, scale the autoscaled ones; see scaling.py. Sharp: a tick
    starts every AUTOSCALE_SECONDS whatever the last one took, so the cadence does not drift by the tick's
    own duration (the simulator's model, and what `--autoscale-seconds` promises)."""
    client, registry, memory = _client(memo), _metrics(memo), _memory(memo)
    with registry.tick_seconds.time():
        outcome = scaling.tick(client, body, memory, registry, _now())
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    patch = scaling.status_update(body, memory.backlog)
    if patch is not None:
        client.patch_status(body.metadata.namespace or "", body.metadata.name or "", patch)


@kopf.on.delete(*RESOURCE, optional=True)
def forget_deleted(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """A deleted JobQueue's metric series go with it. Optional: no finalizer of its own (the timers'
    finalizer already makes kopf see the deletion)."""
    _metrics(memo).forget(body.metadata.namespace or "", body.metadata.name or "")


def _ready(status: Any) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None
