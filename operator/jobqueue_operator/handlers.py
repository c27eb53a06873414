"""Every kopf decorator of the operator. Thin: call the reconciler, post its Events, write its status."""

from __future__ import annotations

import datetime
import logging
import os
from typing import Any, Final

import kopf

from jobqueue_operator import kube, models, reconcile

RESYNC_SECONDS: Final = float(os.environ.get("JOBQUEUE_RESYNC_SECONDS", "30"))
"""How often every JobQueue is reconciled again, to pick up child status and heal drift."""
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


def _report(body: kopf.Body, outcome: reconcile.Outcome, client: kube.Kube) -> None:
    for event in outcome.events:
        kopf.event(body, type=event.type, reason=event.reason, message=event.message)
    client.patch_status(body.metadata.namespace or "", body.metadata.name or "", outcome.status.to_body())


@kopf.on.resume(*RESOURCE)
@kopf.on.create(*RESOURCE)
@kopf.on.update(*RESOURCE, field="spec")
def reconcile_jobqueue(body: kopf.Body, memo: kopf.Memo, retry: int, **_: Any) -> None:
    """Converge the children to the spec; retried with back-off while something is missing or failing."""
    client = _client(memo)
    outcome = reconcile.reconcile(client, body, _now())
    _report(body, outcome, client)
    if outcome.retry is not None:
        raise kopf.TemporaryError(outcome.retry, delay=backoff(retry))


@kopf.timer(*RESOURCE, interval=RESYNC_SECONDS, initial_delay=RESYNC_SECONDS)
def resync(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Level-triggered convergence: child status into the JobQueue's status, drift undone."""
    client = _client(memo)
    outcome = reconcile.reconcile(client, body, _now())
    # Warnings repeat on every pass while a problem lasts: post them only when Ready changes.
    ready_changed = _ready(body.get("status") or {}) != _ready(outcome.status.to_body())
    outcome.events = [e for e in outcome.events if e.type == "Normal" or ready_changed]
    _report(body, outcome, client)


def _ready(status: Any) -> str | None:
    for condition in status.get("conditions") or []:
        if condition.get("type") == "Ready":
            return str(condition.get("status"))
    return None
