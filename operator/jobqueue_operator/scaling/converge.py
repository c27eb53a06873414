"""Every write of one autoscaler tick: a dead worker's tasks put back, worker Pods on a gone node deleted
(so that their ReplicaSets replace them), a managed broker's memory reserve opened or closed, the scale
changes (idle Pods marked for removal first), the metrics, the status fields the autoscaler owns (only
when they changed) and the Events."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from jobqueue_operator import (
    autoscaling,
    broker,
    broker_memory,
    broker_replication,
    events,
    kube,
    naming,
    podmetrics,
    redelivery,
    status,
)
from jobqueue_operator.events import Event
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.reasons import Reason
from jobqueue_operator.scaling.decide import QueueMemory, Scale, TickPlan, observed, previous_conditions, rfc3339
from jobqueue_operator.scaling.observe import UrlCache


@dataclass
class Memory:
    """What one JobQueue's ticks remember, in the operator's memory (the status keeps what must survive)."""

    queues: dict[str, QueueMemory] = field(default_factory=dict)
    url: UrlCache = field(default_factory=UrlCache)
    written: dict[str, Any] | None = None
    """The status body last applied, so an unchanged one is not written again."""
    broker_up: bool | None = None
    """Whether the last tick could read the broker (None: no tick yet)."""
    master: broker_replication.MasterSeen | None = None
    """A Sentinel-managed broker's master as last seen working (a change is a failover; None: none yet)."""
    ticks: int = 0


def _set_deletion_costs(client: kube.KubeApi, namespace: str, jobqueue: str, scale: Scale) -> None:
    """Give idle worker Pods the lowest pod-deletion-cost so the ReplicaSet removes them first."""
    selector = naming.queue_selector(jobqueue, scale.queue.name)
    pods = [p for p in client.pods(namespace, selector) if not (p.get("metadata") or {}).get("deletionTimestamp")]
    costs = autoscaling.deletion_costs(podmetrics.busy(pods, scale.queue.concurrency))
    for pod in pods:
        name = pod["metadata"]["name"]
        if (pod["metadata"].get("annotations") or {}).get(autoscaling.DELETION_COST_ANNOTATION) != costs[name]:
            client.annotate_pod(namespace, name, {autoscaling.DELETION_COST_ANNOTATION: costs[name]})


def _restore(
    memory: Memory, metrics: OperatorMetrics, namespace: str, jobqueue: str, dead: redelivery.Dead
) -> Event | None:
    """Put a dead worker's tasks back on their queues (the broker refuses if its heartbeat came back)."""
    seen = dead.incarnation
    if memory.url.url is None:
        return None
    why = f"{dead.why}: {dead.detail}" if dead.detail else dead.why
    try:
        done = broker.restore_incarnation(memory.url.url, seen.instance)
    except broker.BrokerError as exc:
        return Event("Warning", Reason.WORKER_LOST, f"worker Pod {seen.pod} is gone ({why}); restore failed: {exc}")
    if done.outcome != "restored":
        return None
    for queue, tasks in done.restored.items():
        metrics.count_redelivered(namespace, jobqueue, queue, dead.why, tasks)
    moved = sum(done.restored.values())
    where = ", ".join(f"{tasks} on {queue}" for queue, tasks in sorted(done.restored.items())) or "none"
    message = (
        f"worker Pod {seen.pod} of queue {seen.queue} is gone ({why}): {moved} tasks it held put back "
        f"at the head of their queues ({where})"
    )
    return Event("Warning", Reason.WORKER_LOST, message)


def _delete_lost(client: kube.KubeApi, namespace: str, lost: redelivery.LostPod) -> Event:
    """Delete a worker Pod on a gone node (an ordinary delete: its grace period, never forced). On an
    unreachable node it counts as active for minutes, so its ReplicaSet would not replace it yet; marked for
    deletion, it is replaced at once. It goes from the API server once its node is back, or declared off."""
    try:
        client.delete_pod(namespace, lost.name)
    except kube.KubeError as exc:
        message = f"worker Pod {lost.name} is on a gone node ({lost.detail}); deleting it failed: {exc}"
        return Event("Warning", Reason.DELETE_FAILED, message, cause=lost.name)
    message = (
        f"Deleted Pod {lost.name}: its node is gone ({lost.detail}); its ReplicaSet starts a replacement now, "
        "and the Pod stays Terminating until the node is back or known to be off"
    )
    return Event("Normal", Reason.DELETED, message)


def _set_maxmemory(memory: Memory, maxmemory: int, was: int | None) -> Event | None:
    """Open or close a managed broker's memory reserve (`broker_memory`); the Event that says so."""
    if memory.url.url is None:
        return None
    mib = broker_memory.mib(maxmemory)
    try:
        broker.set_maxmemory(memory.url.url, maxmemory)
    except broker.BrokerError as exc:
        message = f"setting maxmemory to {mib} failed: {exc}"
        return Event("Warning", Reason.BROKER_MEMORY_RESERVE_FAILED, message, cause="broker")
    if was is not None and maxmemory < was:
        return Event("Normal", Reason.BROKER_MEMORY_RESERVE_CLOSED, f"the broker drained: maxmemory back to {mib}")
    message = f"the broker is full: maxmemory raised to its reserve, {mib}, so workers can take and finish tasks"
    return Event("Normal", Reason.BROKER_MEMORY_RESERVE_OPENED, message)


def _scale(client: kube.KubeApi, namespace: str, jobqueue: str, scale: Scale) -> Event:
    decision = scale.decision
    try:
        if decision.replicas < scale.current:
            _set_deletion_costs(client, namespace, jobqueue, scale)
        client.scale(namespace, scale.deployment, decision.replicas)
    except kube.KubeError as exc:
        return Event("Warning", Reason.SCALE_FAILED, f"queue {scale.queue.name}: {exc}", cause=scale.queue.name)
    reason = Reason.SCALED_UP if decision.replicas > scale.current else Reason.SCALED_DOWN
    message = (
        f"queue {scale.queue.name}: {scale.current} -> {decision.replicas} workers "
        f"({decision.reason}: {decision.message})"
    )
    return Event("Normal", reason, message)


def carry_out(
    client: kube.KubeApi,
    plan: TickPlan,
    body: dict[str, Any],
    memory: Memory,
    metrics: OperatorMetrics,
    at: float,
) -> list[Event]:
    """Carry out one tick's plan for the JobQueue `body`; the Events posted."""
    metadata = body.get("metadata") or {}
    namespace, name = str(metadata.get("namespace", "")), str(metadata.get("name", ""))
    on_broker = [_restore(memory, metrics, namespace, name, dead) for dead in plan.restore]
    on_broker += [_delete_lost(client, namespace, lost) for lost in plan.delete_pods]  # after the restores
    if plan.maxmemory is not None:
        on_broker.append(_set_maxmemory(memory, plan.maxmemory, plan.broker.max_memory))
    done = [_scale(client, namespace, name, scale) for scale in plan.scales]
    kept = dict(plan.memory)
    depths = dict(plan.depths)
    series = dict(plan.series)
    for scale, event in zip(plan.scales, done, strict=True):
        if event.type == "Normal":
            stamp = rfc3339(at)
            kept[scale.queue.name] = replace(kept[scale.queue.name], last_scale_time=stamp)
            depths[scale.queue.name] = replace(depths[scale.queue.name], last_scale_time=stamp)
            series[scale.queue.name] = replace(series[scale.queue.name], desired=scale.decision.replicas)
    memory.queues = kept
    memory.broker_up = plan.broker_up
    memory.master = plan.master
    for queue, direction, reason in plan.decisions:
        metrics.count_decision(namespace, name, queue, direction, reason)
    metrics.set_queues(namespace, name, series, broker_up=plan.broker_up)
    metrics.set_broker(namespace, name, plan.broker)
    if plan.failovers is not None:
        metrics.count_failovers(namespace, name, plan.failovers)

    generation = int(metadata.get("generation", 0))
    previous = previous_conditions({"status": memory.written} if memory.written is not None else body)
    computed = status.autoscaler(
        depths, plan.unserved, plan.conditions, previous, generation, rfc3339(at), draining=plan.draining
    )
    written = observed(computed, memory.written, at)
    if written != memory.written:
        client.apply_status(namespace, name, written, naming.AUTOSCALER_FIELD_MANAGER)
        memory.written = written
    broker_events = [event for event in on_broker if event is not None]
    posted = events.distinct([*broker_events, *done, *plan.events])
    for event in posted:
        client.post_event(body, event)
    return posted
