"""PURE: the status of a JobQueue from what the reconciler observed.

Conditions follow the Kubernetes convention: each has observedGeneration, and lastTransitionTime moves
only when the condition's status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from jobqueue_operator.models import Condition, JobQueueStatus, QueueStatus

READY: Final = "Ready"
BROKER_READY: Final = "BrokerReady"
WORKERS_AVAILABLE: Final = "WorkersAvailable"
DEGRADED: Final = "Degraded"

Status = Literal["True", "False", "Unknown"]


@dataclass(frozen=True)
class Problem:
    """Something that keeps the JobQueue from converging: a reason (CamelCase) and a message."""

    reason: str
    message: str


@dataclass(frozen=True)
class BrokerState:
    ready: bool
    reason: str
    message: str


@dataclass(frozen=True)
class QueueObservation:
    """One queue's worker Deployment as the API server reports it (None: it does not exist yet)."""

    name: str
    deployment: str
    desired: int = 0
    replicas: int = 0
    ready: int = 0
    available: int = 0
    stalled: bool = False
    """The Deployment's Progressing condition is False (e.g. ProgressDeadlineExceeded)."""


@dataclass(frozen=True)
class Observation:
    generation: int
    broker: BrokerState
    queues: Sequence[QueueObservation]
    problems: Sequence[Problem] = field(default_factory=tuple)
    depths: dict[str, int] | None = None
    """Tasks waiting per queue, when the broker could be read."""


def set_condition(
    conditions: Sequence[Condition],
    type_: str,
    status: Status,
    reason: str,
    message: str,
    generation: int,
    now: str,
) -> list[Condition]:
    """`conditions` with `type_` set; its lastTransitionTime kept unless the status changed."""
    previous = next((c for c in conditions if c.type == type_), None)
    changed = previous is None or previous.status != status or previous.last_transition_time is None
    updated = Condition(
        type=type_,
        status=status,
        reason=reason,
        message=message,
        observed_generation=generation,
        last_transition_time=now if changed else (previous.last_transition_time if previous else now),
    )
    others = [c for c in conditions if c.type != type_]
    return [*others, updated] if previous is None else [updated if c.type == type_ else c for c in conditions]


def _workers(queues: Sequence[QueueObservation]) -> tuple[Status, str, str]:
    waiting = [q for q in queues if q.desired > 0 and q.available == 0]
    if waiting:
        detail = ", ".join(f"{q.name} ({q.available}/{q.desired} available)" for q in waiting)
        return "False", "WorkersUnavailable", f"queues without an available worker: {detail}"
    return "True", "AllQueuesServed", "every queue that wants workers has at least one available"


def _degraded(observation: Observation) -> tuple[Status, str, str]:
    if observation.problems:
        first = observation.problems[0]
        return "True", first.reason, "; ".join(p.message for p in observation.problems)
    if not observation.broker.ready:
        return "True", observation.broker.reason, observation.broker.message
    stalled = [q.name for q in observation.queues if q.stalled]
    if stalled:
        return "True", "WorkersStalled", f"worker Deployments not progressing: {', '.join(stalled)}"
    return "False", "AsExpected", "nothing is wrong"


def _ready(observation: Observation, workers: tuple[Status, str, str]) -> tuple[Status, str, str]:
    if observation.problems:
        first = observation.problems[0]
        return "False", first.reason, first.message
    if not observation.broker.ready:
        return "False", observation.broker.reason, observation.broker.message
    if workers[0] != "True":
        return "False", workers[1], workers[2]
    return "True", "AllQueuesAvailable", "the broker is ready and every queue is served"


def compute(observation: Observation, previous: Sequence[Condition], now: str) -> JobQueueStatus:
    """The whole status for one observation."""
    generation = observation.generation
    broker = observation.broker
    workers = _workers(observation.queues)
    conditions = list(previous)
    broker_status: Status = "True" if broker.ready else "False"
    updates: list[tuple[str, tuple[Status, str, str]]] = [
        (BROKER_READY, (broker_status, broker.reason, broker.message)),
        (WORKERS_AVAILABLE, workers),
        (DEGRADED, _degraded(observation)),
        (READY, _ready(observation, workers)),
    ]
    for type_, (status, reason, message) in updates:
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)
    depths = observation.depths
    queues = [
        QueueStatus(
            name=q.name,
            deployment=q.deployment,
            ready=None if depths is None else depths.get(q.name, 0),
            replicas=q.replicas,
            ready_replicas=q.ready,
            desired_replicas=q.desired,
        )
        for q in observation.queues
    ]
    return JobQueueStatus(
        observed_generation=generation,
        queue_count=len(observation.queues),
        backlog=None if depths is None else sum(depths.get(q.name, 0) for q in observation.queues),
        workers=f"{sum(q.ready for q in observation.queues)}/{sum(q.desired for q in observation.queues)}",
        conditions=conditions,
        queues=queues,
    )


@dataclass(frozen=True)
class QueueBacklog:
    """What the autoscaler's last tick saw of one queue (None: the broker could not be read)."""

    ready: int | None
    in_flight: int | None
    oldest_age_seconds: float | None = None
    last_scale_time: str | None = None
    workers: tuple[int, int, int] | None = None
    """(desired, current, ready) worker Pods, when the tick listed the Deployment."""


def with_backlog(computed: JobQueueStatus, backlog: Mapping[str, QueueBacklog]) -> JobQueueStatus:
    """`computed` with each queue's backlog fields and the total (blank unless every queue was read).

    Both writers of the status (the reconciler and the autoscaler's tick) pass it through this, so neither
    undoes what the other wrote."""
    queues = []
    for queue in computed.queues:
        seen = backlog.get(queue.name)
        if seen is None:
            queues.append(queue)
            continue
        update: dict[str, object] = {
            "ready": seen.ready,
            "in_flight": seen.in_flight,
            "oldest_task_age_seconds": None if seen.oldest_age_seconds is None else int(seen.oldest_age_seconds),
            "last_scale_time": seen.last_scale_time or queue.last_scale_time,
        }
        if seen.workers is not None:
            desired, current, ready = seen.workers
            update.update(desired_replicas=desired, replicas=current, ready_replicas=ready)
        queues.append(queue.model_copy(update=update))
    known = [q for q in queues if q.ready is not None and q.in_flight is not None]
    total = sum((q.ready or 0) + (q.in_flight or 0) for q in known) if queues and len(known) == len(queues) else None
    workers = f"{sum(q.ready_replicas for q in queues)}/{sum(q.desired_replicas for q in queues)}"
    return computed.model_copy(update={"queues": queues, "backlog": total, "workers": workers})
