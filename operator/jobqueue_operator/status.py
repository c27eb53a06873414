"""PURE: the status of a JobQueue from what was observed.

Two writers share the status, each server-side applying only the fields it owns (kube.apply_status):
- the reconciler (`compute`): observedGeneration, queueCount, workers, the conditions Ready, BrokerReady,
  WorkersAvailable and Degraded, each queue's deployment and replica counts, and the draining queues;
- the autoscaler's tick (`autoscaler`): backlog (its queues' and the draining queues' tasks), each queue's
  depth, oldest task age, dead letters, lastScaleTime and the autoscaler's own state, the unserved queues,
  lastObservedTime, and the ScalingActive condition.
Conditions follow the Kubernetes convention: each has observedGeneration, and lastTransitionTime moves
only when the condition's status changes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from jobqueue_operator.causes import Cause
from jobqueue_operator.models import (
    Condition,
    DrainingQueue,
    JobQueueStatus,
    OldestAgeSource,
    QueueStatus,
    ScaleDownStep,
    UnservedQueue,
)
from jobqueue_operator.reasons import Reason

READY: Final = "Ready"
BROKER_READY: Final = "BrokerReady"
WORKERS_AVAILABLE: Final = "WorkersAvailable"
DEGRADED: Final = "Degraded"
SCALING_ACTIVE: Final = "ScalingActive"
QUEUES_SERVED: Final = "QueuesServed"
BROKER_MEMORY_AVAILABLE: Final = "BrokerMemoryAvailable"
RESULT_BACKEND_READY: Final = "ResultBackendReady"
"""Every running worker reaches the result backend it stores results in (as each reports in the broker)."""
BROKER_AVAILABLE: Final = "BrokerAvailable"
"""A Sentinel-managed broker only: a master takes writes and at least one replica is in sync with it."""
AUTOSCALER_CONDITIONS: Final = (
    SCALING_ACTIVE,
    QUEUES_SERVED,
    BROKER_MEMORY_AVAILABLE,
    RESULT_BACKEND_READY,
    BROKER_AVAILABLE,
)
BROKER_UP_TO_DATE: Final = "BrokerUpToDate"
"""A managed broker only: Redis runs its current template and accepts only the Secret's password."""
RECONCILER_CONDITIONS: Final = (BROKER_READY, WORKERS_AVAILABLE, DEGRADED, READY, BROKER_UP_TO_DATE)
OBSERVED_REFRESH_SECONDS: Final = 30
"""The tick writes `lastObservedTime` with every status write, and at least this often when nothing else
changed: an idle JobQueue costs one status write per this many seconds, and a status older than a few of
these says the operator is not running (the plugin warns; the printer column shows its age)."""

Status = Literal["True", "False", "Unknown"]
Verdict = tuple[Status, str, str]
"""(status, reason, message) of one condition."""


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
    cause: Cause | None = None
    """Why some of its Pods do not run (refused, crashing, image not pulled), if any."""


@dataclass(frozen=True)
class Observation:
    generation: int
    broker: BrokerState
    queues: Sequence[QueueObservation]
    problems: Sequence[Problem] = field(default_factory=tuple)
    draining: Sequence[DrainingQueue] = field(default_factory=tuple)
    """Queues removed from the spec whose workers stay until the broker queue is empty."""
    broker_up_to_date: Verdict | None = None
    """A managed broker's BrokerUpToDate (a restart held, a password rotating); None: no such condition."""
    warnings: Sequence[Problem] = field(default_factory=tuple)
    """Wrong but still serving (a Sentinel-managed broker with too few members in sync): Degraded says it,
    Ready does not."""


def deployment_replicas(deployment: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(desired, current, ready) Pods of a Deployment as the API server returns it; zeros when it is missing."""
    if deployment is None:
        return 0, 0, 0
    observed = deployment.get("status") or {}
    return (
        int((deployment.get("spec") or {}).get("replicas") or 0),
        int(observed.get("replicas") or 0),
        int(observed.get("readyReplicas") or 0),
    )


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


def _queue_cause(queue: QueueObservation) -> str:
    assert queue.cause is not None
    return f"queue {queue.name}: {queue.cause.message}"


def _workers(queues: Sequence[QueueObservation]) -> Verdict:
    waiting = [q for q in queues if q.desired > 0 and q.available == 0]
    if not waiting:
        return "True", Reason.ALL_QUEUES_SERVED, "every queue that wants workers has at least one available"
    refused = [q for q in waiting if q.cause is not None and q.cause.kind == "refused"]
    if refused:
        return "False", Reason.WORKER_PODS_REFUSED, "; ".join(_queue_cause(q) for q in refused)
    failing = [q for q in waiting if q.cause is not None]
    if failing:
        return "False", Reason.WORKERS_FAILING, "; ".join(_queue_cause(q) for q in failing)
    detail = ", ".join(f"{q.name} ({q.available}/{q.desired} available)" for q in waiting)
    return "False", Reason.WORKERS_UNAVAILABLE, f"queues without an available worker: {detail}"


def _degraded(observation: Observation) -> Verdict:
    """True when anything is wrong: the reason is the first thing found, the message says every one."""
    found: list[tuple[str, str]] = [(p.reason, p.message) for p in observation.problems]
    if not observation.broker.ready:
        found.append((observation.broker.reason, observation.broker.message))
    found += [(p.reason, p.message) for p in observation.warnings]
    troubled = [q for q in observation.queues if q.cause is not None]
    if troubled:
        refused = any(q.cause is not None and q.cause.kind == "refused" for q in troubled)
        reason = Reason.WORKER_PODS_REFUSED if refused else Reason.WORKERS_FAILING
        found.append((reason, "; ".join(_queue_cause(q) for q in troubled)))
    stalled = [q.name for q in observation.queues if q.stalled]
    if stalled:
        found.append((Reason.WORKERS_STALLED, f"worker Deployments not progressing: {', '.join(stalled)}"))
    if not found:
        return "False", Reason.AS_EXPECTED, "nothing is wrong"
    return "True", found[0][0], "; ".join(message for _, message in found)


def _ready(observation: Observation, workers: Verdict) -> Verdict:
    if observation.problems:
        first = observation.problems[0]
        return "False", first.reason, first.message
    if not observation.broker.ready:
        return "False", observation.broker.reason, observation.broker.message
    if workers[0] != "True":
        return "False", workers[1], workers[2]
    return "True", Reason.ALL_QUEUES_AVAILABLE, "the broker is ready and every queue is served"


def compute(observation: Observation, previous: Sequence[Condition], now: str) -> JobQueueStatus:
    """The reconciler's part of the status for one observation."""
    generation = observation.generation
    broker = observation.broker
    workers = _workers(observation.queues)
    conditions = [c for c in previous if c.type in RECONCILER_CONDITIONS and c.type != BROKER_UP_TO_DATE]
    if observation.broker_up_to_date is not None:
        conditions += [c for c in previous if c.type == BROKER_UP_TO_DATE]
    broker_status: Status = "True" if broker.ready else "False"
    updates: list[tuple[str, Verdict]] = [
        (BROKER_READY, (broker_status, broker.reason, broker.message)),
        (WORKERS_AVAILABLE, workers),
        (DEGRADED, _degraded(observation)),
        (READY, _ready(observation, workers)),
    ]
    if observation.broker_up_to_date is not None:
        updates.append((BROKER_UP_TO_DATE, observation.broker_up_to_date))
    for type_, (status, reason, message) in updates:
        conditions = set_condition(conditions, type_, status, reason, message, generation, now)
    queues = [
        QueueStatus(
            name=q.name,
            deployment=q.deployment,
            replicas=q.replicas,
            ready_replicas=q.ready,
            desired_replicas=q.desired,
        )
        for q in observation.queues
    ]
    return JobQueueStatus(
        observed_generation=generation,
        queue_count=len(observation.queues),
        workers=f"{sum(q.ready for q in observation.queues)}/{sum(q.desired for q in observation.queues)}",
        conditions=conditions,
        queues=queues,
        draining_queues=list(observation.draining),
    )


def with_problems(
    computed: JobQueueStatus, observation: Observation, problems: Sequence[Problem], now: str
) -> JobQueueStatus:
    """`computed` again, with problems found while converging (a refused apply) added to the observation's."""
    if not problems:
        return computed
    again = Observation(
        observation.generation,
        observation.broker,
        observation.queues,
        (*observation.problems, *problems),
        observation.draining,
        observation.broker_up_to_date,
        observation.warnings,
    )
    return compute(again, computed.conditions, now)


@dataclass(frozen=True)
class QueueDepth:
    """What the autoscaler's tick saw of one queue (None: the broker could not be read)."""

    ready: int | None
    in_flight: int | None
    oldest_age_seconds: float | None = None
    dead_letters: int | None = None
    last_scale_time: str | None = None
    oldest_age_source: OldestAgeSource | None = None
    """How `oldest_age_seconds` was measured (jobqueue_operator.oldest)."""
    idle_since: str | None = None
    """The autoscaler's idle clock (RFC 3339), kept in the status so an operator restart does not reset it."""
    hold: Sequence[tuple[str, int]] = ()
    """The autoscaler's scale-down window as (until, replicas) steps, kept for the same reason."""


def autoscaler(
    depths: Mapping[str, QueueDepth],
    unserved: Sequence[UnservedQueue],
    verdicts: Mapping[str, Verdict],
    previous: Sequence[Condition],
    generation: int,
    now: str,
    draining: Mapping[str, int | None] | None = None,
) -> JobQueueStatus:
    """The tick's part of the status: `verdicts` the autoscaler's conditions that apply now; `draining` the
    tasks of each queue that left the spec but still drains (its workers run them: they are in the backlog).
    Fields it leaves out (an unknown depth, a condition that does not apply) are removed by the apply."""
    queues = []
    for name, seen in depths.items():
        queues.append(
            QueueStatus(
                name=name,
                ready=seen.ready,
                in_flight=seen.in_flight,
                oldest_task_age_seconds=None if seen.oldest_age_seconds is None else int(seen.oldest_age_seconds),
                oldest_task_age_source=None if seen.oldest_age_seconds is None else seen.oldest_age_source,
                dead_letters=seen.dead_letters,
                last_scale_time=seen.last_scale_time,
                idle_since=seen.idle_since,
                scale_down_hold=[ScaleDownStep(until=until, replicas=n) for until, n in seen.hold] or None,
            )
        )
    known = [q for q in queues if q.ready is not None and q.in_flight is not None]
    leftover = list((draining or {}).values())
    every = bool(queues) and len(known) == len(queues) and None not in leftover
    backlog = sum((q.ready or 0) + (q.in_flight or 0) for q in known) + sum(t or 0 for t in leftover) if every else None
    conditions = [c for c in previous if c.type in verdicts]
    for type_, verdict in verdicts.items():
        conditions = set_condition(conditions, type_, *verdict, generation, now)
    return JobQueueStatus(
        backlog=backlog,
        unserved_tasks=sum(q.tasks for q in unserved) if unserved else None,
        unserved_queues=list(unserved),
        conditions=conditions,
        queues=queues,
    )
