"""The autoscaler's tick for one JobQueue: measure (broker.py), export (metrics.py), decide
(autoscaling.py), and when a queue's replicas change: set pod-deletion costs, scale, report.

Thin on purpose: the deciding is `autoscaling.decide`, `rates`, and the pure helpers at the top of this
module; the handler in handlers.py only calls `tick` and posts the Events it returns. What the tick
remembers (the autoscaler's history and the rate window per queue) lives in the JobQueue's kopf memo.
"""

from __future__ import annotations

import base64
import binascii
import logging
import math
import time
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families
from pydantic import ValidationError

from jobqueue_operator import autoscaling, broker, kube, naming, promquery, rates, status
from jobqueue_operator.build.common import broker_url_ref
from jobqueue_operator.build.workers import METRICS_PORT, priority_steps
from jobqueue_operator.metrics import OperatorMetrics, QueueSeries
from jobqueue_operator.models import JobQueue, JobQueueStatus, Queue
from jobqueue_operator.reconcile import Event

PAUSE_ANNOTATION: Final = "jobqueue.dev/autoscaling-paused"
URL_REFRESH_SECONDS: Final = 60.0
"""How long the broker URL read from its Secret is reused before it is read again."""
SCRAPE_TIMEOUT_SECONDS: Final = 1.0
BUSY_METRIC: Final = "jobqueue_worker_active_tasks"
HELD: Final = frozenset(
    {autoscaling.Reason.PAUSED, autoscaling.Reason.METRICS_UNAVAILABLE, autoscaling.Reason.STABILIZING}
)
"""Reasons counted as decisions even when the replicas stay: a change someone wanted and did not get."""

logger = logging.getLogger(__name__)


@dataclass
class QueueMemory:
    history: autoscaling.History = field(default_factory=autoscaling.History)
    window: rates.Window = field(default_factory=rates.Window)
    last_scale_time: str | None = None
    query_error: str | None = None
    """The Prometheus source's last failure, so its Warning is posted once per spell, not every tick."""


@dataclass
class Memory:
    """What one JobQueue's ticks remember, kept in its kopf memo."""

    queues: dict[str, QueueMemory] = field(default_factory=dict)
    backlog: dict[str, status.QueueBacklog] = field(default_factory=dict)
    """The last tick's view per queue, for every writer of the status."""
    url: str | None = None
    url_read_at: float = float("-inf")


@dataclass
class TickOutcome:
    events: list[Event] = field(default_factory=list)


# -- pure helpers --------------------------------------------------------------------------------------


def paused(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(PAUSE_ANNOTATION, "").strip().lower() == "true"


def policy_for(queue: Queue, is_paused: bool) -> autoscaling.Policy:
    """The CRD's autoscaling block as the autoscaler's Policy."""
    block = queue.autoscaling
    assert block is not None
    return autoscaling.Policy(
        min_replicas=block.min_replicas,
        max_replicas=block.max_replicas,
        concurrency=queue.concurrency,
        target_tasks_per_worker=block.target_tasks_per_worker,
        target_wait_seconds=None if block.target_wait_seconds is None else float(block.target_wait_seconds),
        scale_down_stabilization_seconds=float(block.scale_down_stabilization_seconds),
        idle_seconds_before_zero=float(block.idle_seconds_before_zero),
        paused=is_paused,
    )


def observation(
    counts: broker.QueueCounts | None,
    error: str | None,
    replicas: int,
    seen: rates.Rates,
    waiting: float | None = None,
) -> autoscaling.Observation:
    """The autoscaler's input for one queue; `error` (the broker's or the Prometheus source's) holds the
    replicas. `waiting` is the Prometheus source's value when the queue has one: rounded up, it replaces the
    broker's waiting count. In-flight tasks always come from the broker, so without it there is no
    observation either."""
    if error is not None or counts is None:
        return autoscaling.Observation(0, 0, replicas, error=error or "the queue was not read")
    ready = counts.ready if waiting is None else math.ceil(waiting)
    return autoscaling.Observation(
        ready, counts.in_flight, replicas, seen.arrival_rate, seen.mean_service_seconds, seen.service_scv
    )


def busy_slots(metrics_text: str) -> int:
    """Tasks a worker Pod is running now, from its /metrics."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics_text)
            if family.name == BUSY_METRIC
            for sample in family.samples
        )
    )


def _replicas(deployment: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(desired, current, ready) of a worker Deployment."""
    if deployment is None:
        return 0, 0, 0
    observed = deployment.get("status") or {}
    return (
        int((deployment.get("spec") or {}).get("replicas") or 0),
        int(observed.get("replicas") or 0),
        int(observed.get("readyReplicas") or 0),
    )


# -- doing ----------------------------------------------------------------------------------------------


def _broker_url(client: kube.Kube, jq: JobQueue, memory: Memory, now: float) -> str:
    if memory.url is not None and now - memory.url_read_at < URL_REFRESH_SECONDS:
        return memory.url
    name, key = broker_url_ref(jq)
    data = client.secret_data(jq.namespace, name)
    if data is None or key not in data:
        raise broker.BrokerError(f"Secret {name} with key {key} does not exist")
    try:
        memory.url = base64.b64decode(data[key]).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise broker.BrokerError(f"Secret {name} key {key} is not a URL") from None
    memory.url_read_at = now
    return memory.url


def _measure(
    client: kube.Kube, jq: JobQueue, memory: Memory, now: float
) -> tuple[Mapping[str, broker.QueueCounts], str | None]:
    keys = [broker.QueueKeys(q.name, tuple(priority_steps(q.priority_levels))) for q in jq.spec.queues]
    try:
        return broker.read_counts(_broker_url(client, jq, memory, now), keys), None
    except (broker.BrokerError, kube.KubeError) as exc:
        memory.url = None  # read the Secret again next time: it may have been the cause
        return {}, str(exc)


def _query(queue: Queue, remembered: QueueMemory, outcome: TickOutcome) -> tuple[float | None, str | None]:
    """The queue's Prometheus source as (value, error): (None, None) without a source. A new failure is
    posted as a Warning once; it is logged on every tick it lasts."""
    source = queue.autoscaling.prometheus if queue.autoscaling is not None else None
    if source is None:
        remembered.query_error = None
        return None, None
    try:
        value = promquery.instant_query(source.server_address, source.query, source.timeout_seconds)
    except promquery.QueryError as exc:
        message = f"queue {queue.name}: Prometheus query failed, holding replicas: {exc}"
        if remembered.query_error != str(exc):
            outcome.events.append(Event("Warning", "MetricQueryFailed", message))
        remembered.query_error = str(exc)
        logger.info("%s", message)
        return None, str(exc)
    remembered.query_error = None
    return value, None


def _scrape_busy(pod: Mapping[str, Any], concurrency: int) -> int:
    """Tasks running in one worker Pod; unknown (no IP, no answer) counts as fully busy, to be spared."""
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return concurrency
    try:
        with urllib.request.urlopen(f"http://{ip}:{METRICS_PORT}/metrics", timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
            return busy_slots(reply.read().decode())
    except (OSError, ValueError):
        return concurrency


def _set_deletion_costs(client: kube.Kube, jq: JobQueue, queue: Queue) -> None:
    """Give idle worker Pods the lowest pod-deletion-cost so the ReplicaSet removes them first."""
    selector = ",".join(f"{k}={v}" for k, v in naming.selector_labels(jq, naming.WORKER, queue.name).items())
    pods = [p for p in client.pods(jq.namespace, selector) if not (p.get("metadata") or {}).get("deletionTimestamp")]
    busy = {p["metadata"]["name"]: _scrape_busy(p, queue.concurrency) for p in pods}
    for pod in pods:
        name = pod["metadata"]["name"]
        cost = autoscaling.deletion_costs(busy)[name]
        if (pod["metadata"].get("annotations") or {}).get(autoscaling.DELETION_COST_ANNOTATION) != cost:
            client.annotate_pod(jq.namespace, name, {autoscaling.DELETION_COST_ANNOTATION: cost})


def _apply(client: kube.Kube, jq: JobQueue, queue: Queue, current: int, decision: autoscaling.Decision) -> Event:
    deployment = naming.worker_deployment(jq.name, queue.name)
    try:
        if decision.replicas < current:
            _set_deletion_costs(client, jq, queue)
        client.scale(jq.namespace, deployment, decision.replicas)
    except kube.KubeError as exc:
        return Event("Warning", "ScaleFailed", f"queue {queue.name}: {exc}")
    reason = "ScaledUp" if decision.replicas > current else "ScaledDown"
    message = f"queue {queue.name}: {current} -> {decision.replicas} workers ({decision.reason}: {decision.message})"
    return Event("Normal", reason, message)


def tick(
    client: kube.Kube,
    body: Mapping[str, Any],
    memory: Memory,
    metrics: OperatorMetrics,
    stamp: str,
    now: float | None = None,
) -> TickOutcome:
    """One autoscaler pass over every queue of the JobQueue `body`; `stamp` is the wall-clock time (RFC 3339)."""
    now = time.monotonic() if now is None else now
    try:
        jq = JobQueue.from_body(dict(body))
    except ValidationError:
        return TickOutcome()  # the reconciler reports the invalid spec
    counts, error = _measure(client, jq, memory, now)
    deployments = client.worker_deployments(jq.namespace, jq.name)
    if not memory.queues:
        seed(memory, body, [q.name for q in jq.spec.queues])
    is_paused = paused((body.get("metadata") or {}).get("annotations"))
    wall = time.time()
    outcome = TickOutcome()
    series: dict[str, QueueSeries] = {}
    backlog: dict[str, status.QueueBacklog] = {}
    for queue in jq.spec.queues:
        remembered = memory.queues.setdefault(queue.name, QueueMemory())
        seen = counts.get(queue.name)
        if seen is not None:
            sample = rates.Sample(
                now, seen.ready + seen.in_flight, seen.completed, seen.run_seconds, seen.run_seconds_sq
            )
            remembered.window = rates.add(remembered.window, sample)
        desired, current, ready = _replicas(deployments.get(queue.name))
        if queue.autoscaled and queue.name in deployments:
            policy = policy_for(queue, is_paused)
            waiting, query_error = _query(queue, remembered, outcome)
            observed = observation(seen, query_error or error, desired, rates.estimate(remembered.window), waiting)
            decision = autoscaling.decide(observed, policy, remembered.history, now)
            remembered.history = decision.history
            if decision.replicas != desired:
                event = _apply(client, jq, queue, desired, decision)
                outcome.events.append(event)
                if event.type == "Normal":
                    desired = decision.replicas
                    remembered.last_scale_time = stamp
            if decision.direction != "none" or decision.reason in HELD:
                metrics.count_decision(jq.namespace, jq.name, queue.name, decision.direction, decision.reason)
        age = None if seen is None or seen.oldest_sent_at is None else max(wall - seen.oldest_sent_at, 0.0)
        ready_tasks = None if seen is None else seen.ready
        in_flight = None if seen is None else seen.in_flight
        by_priority = () if seen is None else seen.ready_by_step
        series[queue.name] = QueueSeries(ready_tasks, in_flight, age, desired, current, ready, by_priority)
        backlog[queue.name] = status.QueueBacklog(
            ready_tasks, in_flight, age, remembered.last_scale_time, (desired, current, ready)
        )
    for gone in set(memory.queues) - {q.name for q in jq.spec.queues}:
        del memory.queues[gone]
    memory.backlog = backlog
    metrics.set_queues(jq.namespace, jq.name, series, broker_up=error is None)
    if error is not None:
        logger.info("JobQueue %s/%s: broker not read, holding replicas: %s", jq.namespace, jq.name, error)
    return outcome


def status_update(body: Mapping[str, Any], backlog: Mapping[str, status.QueueBacklog]) -> dict[str, Any] | None:
    """The status body with the tick's backlog, or None when it would not change (or is not written yet)."""
    current = body.get("status") or {}
    if not current.get("queues"):
        return None
    try:
        previous = JobQueueStatus.model_validate(current)
    except ValidationError:
        return None
    updated = status.with_backlog(previous, backlog).to_body()
    if updated == previous.to_body():
        return None
    return clear_backlog(current, updated)


def clear_backlog(current: Mapping[str, Any], updated: dict[str, Any]) -> dict[str, Any]:
    """A merge patch leaves out what it does not name: an unknown backlog must be written as null."""
    if "backlog" in current and "backlog" not in updated:
        return {**updated, "backlog": None}
    return updated


def seed(memory: Memory, body: Mapping[str, Any], names: Sequence[str]) -> None:
    """After an operator restart: the last scale times from the status."""
    for item in (body.get("status") or {}).get("queues") or []:
        name = item.get("name")
        if name in names and item.get("lastScaleTime"):
            memory.queues.setdefault(name, QueueMemory()).last_scale_time = item["lastScaleTime"]
