"""PURE: one autoscaler tick's decisions from what it read: per queue the replicas (autoscaling.decide),
the metric series, the status the autoscaler owns, and the Warnings of its metric sources.

What the autoscaler remembers between ticks (its history and rate window per queue) is `QueueMemory`;
`decide` returns the memory to keep instead of changing the one it got. The part of it a restart must
not lose (the idle clock and the scale-down window) is written to the status (`idleSince`,
`scaleDownHold`) and read back by `seeded` after a restart, so a restarted operator neither scales down
early nor forgets how long a queue has been idle.
"""

from __future__ import annotations

import datetime
import math
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

from jobqueue_operator import (
    autoscaling,
    broker_memory,
    broker_replication,
    models,
    naming,
    nodes,
    oldest,
    rates,
    redelivery,
    startup,
    status,
)
from jobqueue_operator.broker_memory import mib
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.events import Event
from jobqueue_operator.metrics import BrokerSeries, QueueSeries
from jobqueue_operator.models import Condition, JobQueue, JobQueueStatus, Queue, UnservedQueue
from jobqueue_operator.reasons import Reason
from jobqueue_worker import contract

if TYPE_CHECKING:  # only the type: reading the broker is observe's job
    from jobqueue_operator.broker import QueueCounts


@dataclass(frozen=True)
class Seen:
    """What one tick read, at wall-clock time `at`."""

    jq: JobQueue
    at: float
    counts: Mapping[str, QueueCounts] = field(default_factory=dict)
    error: str | None = None
    """Why the broker could not be read (then `counts` is empty)."""
    deployments: Mapping[str, Manifest] = field(default_factory=dict)
    """Worker Deployments by queue name."""
    queries: Mapping[str, tuple[float | None, str | None]] = field(default_factory=dict)
    """Queue -> (value, error) of its Prometheus source, for autoscaled queues that have one."""
    incarnations: Sequence[redelivery.Seen] = ()
    """The worker incarnations registered in the broker (empty when it could not be read)."""
    worker_pods: Mapping[str, Manifest] = field(default_factory=dict)
    """The JobQueue's worker Pods by name, as the API server has them (read when a worker's heartbeat
    lapsed, and every few ticks to learn the Pods' start-up; empty otherwise)."""
    unserved: Mapping[str, int] | None = None
    """Broker queues outside the spec that hold tasks -> how many (None: not read)."""
    memory: tuple[int, int] | None = None
    """The broker's (used, max) memory in bytes; max 0: no limit (None: not read)."""
    node_view: nodes.Snapshot | None = None
    """The Nodes and their Leases, read when `worker_pods` are bound to nodes (None: not read, or failed)."""
    registry_read: bool = False
    """`incarnations` is the broker's whole registry of these queues (not empty for want of a read)."""
    members: broker_replication.Members | None = None
    """A Sentinel-managed broker's members (None: a redis:// broker, or its URL could not be read)."""


PAUSE_ANNOTATION: Final = "jobqueue.dev/autoscaling-paused"
HELD: Final = frozenset(
    {autoscaling.Reason.PAUSED, autoscaling.Reason.METRICS_UNAVAILABLE, autoscaling.Reason.STABILIZING}
)
"""Reasons counted as decisions even when the replicas stay: a change someone wanted and did not get."""
HOLD_GRID_SECONDS: Final = 30.0
"""The scale-down window is written to the status rounded up to this grid: fewer writes, and a restart
holds at most this much longer than the exact window would have (never shorter)."""


@dataclass(frozen=True)
class QueueMemory:
    history: autoscaling.History = field(default_factory=autoscaling.History)
    window: rates.Window = field(default_factory=rates.Window)
    last_scale_time: str | None = None
    query_error: str | None = None
    """The Prometheus source's last failure, so its Warning is posted once per spell, not every tick."""
    dead_letters: int | None = None
    """The dead-letter list's length at the last tick, so a growth is a Warning once."""
    learned: startup.Learned = field(default_factory=startup.Learned)
    """The start-ups of this queue's recent worker Pods (a policy without `startupSeconds` plans with them)."""
    first_seen: Mapping[str, float] = field(default_factory=dict)
    """When the operator first saw each message now at the end of one of the queue's lists (`oldest.py`);
    in memory only: a restarted operator counts an unstamped task's age from its restart."""
    leaving: int = 0
    """The queue's workers on nodes being emptied (cordoned or drained) when the Pods were last read: the
    surge (`with_surge`) lasts between Pod reads, so it neither flaps nor grows."""


@dataclass(frozen=True)
class Scale:
    """A change of one queue's replicas for converge to carry out."""

    queue: Queue
    deployment: str
    current: int
    decision: autoscaling.Decision


@dataclass(frozen=True)
class TickPlan:
    scales: Sequence[Scale]
    memory: Mapping[str, QueueMemory]
    """The memory to keep, per queue of the spec."""
    series: Mapping[str, QueueSeries]
    depths: Mapping[str, status.QueueDepth]
    """Per queue, what the status shows (lastScaleTime as it was: converge sets it for done scales)."""
    decisions: Sequence[tuple[str, str, str]]
    """(queue, direction, reason) to count in the decisions metric."""
    conditions: Mapping[str, status.Verdict]
    """The conditions the autoscaler owns that apply now (ScalingActive, QueuesServed, BrokerMemoryAvailable)."""
    events: Sequence[Event]
    broker_up: bool
    restore: Sequence[redelivery.Dead] = ()
    """Dead worker incarnations whose tasks go back on their queues now."""
    delete_pods: Sequence[redelivery.LostPod] = ()
    """Worker Pods on a gone node to delete (after the restores), so that their ReplicaSets replace them."""
    unserved: Sequence[UnservedQueue] = ()
    draining: Mapping[str, int | None] = field(default_factory=dict)
    """Waiting + in-flight tasks of each queue that left the spec and still drains (None: not read), for the backlog."""
    broker: BrokerSeries = field(default_factory=BrokerSeries)
    maxmemory: int | None = None
    """The broker's maxmemory to set now (its memory reserve opens or closes); None: leave it."""
    master: broker_replication.MasterSeen | None = None
    """A Sentinel-managed broker's master as last seen working, to remember for the next tick."""
    failovers: int | None = None
    """Failovers seen by this tick (0 or 1), for jobqueue_broker_failovers_total; None: not a Sentinel-managed
    broker (no such series)."""


def paused(annotations: Mapping[str, str] | None) -> bool:
    return (annotations or {}).get(PAUSE_ANNOTATION, "").strip().lower() == "true"


def policy_for(queue: Queue, is_paused: bool, learned_startup: float | None = None) -> autoscaling.Policy:
    """The CRD's autoscaling block as the autoscaler's Policy; without `startupSeconds` in it, the start-up
    learned from the queue's own Pods, else the default."""
    block = queue.autoscaling
    assert block is not None
    planned_startup = learned_startup if learned_startup is not None else autoscaling.DEFAULT_STARTUP_SECONDS
    return autoscaling.Policy(
        min_replicas=block.min_replicas,
        max_replicas=block.max_replicas,
        concurrency=queue.concurrency,
        target_tasks_per_worker=block.target_tasks_per_worker,
        target_wait_seconds=None if block.target_wait_seconds is None else float(block.target_wait_seconds),
        scale_down_stabilization_seconds=float(block.scale_down_stabilization_seconds),
        idle_seconds_before_zero=(
            None if block.idle_seconds_before_zero is None else float(block.idle_seconds_before_zero)
        ),
        paused=is_paused,
        startup_seconds=planned_startup if block.startup_seconds is None else float(block.startup_seconds),
    )


def planning_age(dated: tuple[float, oldest.Source] | None, counted: float | None) -> float | None:
    """The oldest wait the autoscaler plans with: the producer's stamp when the oldest task has one; else the
    larger of the age shown (`oldest.measured`, a lower bound) and `rates.oldest_wait` (its upper bound from
    the arrivals count, at most a tick above for one first-in-first-out list): a wait taken too short is a
    scale-up missed."""
    if dated is not None and dated[1] == "sent-time":
        return dated[0]
    known = [age for age in (None if dated is None else dated[0], counted) if age is not None]
    return max(known) if known else None


def observation(
    counts: QueueCounts | None,
    error: str | None,
    replicas: int,
    seen: rates.Rates,
    waiting: float | None = None,
    oldest_wait: float | None = None,
    ready_replicas: int | None = None,
) -> autoscaling.Observation:
    """The autoscaler's input for one queue; `error` (the broker's or the Prometheus source's) holds the
    replicas. `waiting` is the Prometheus source's value when the queue has one: rounded up, it replaces the
    broker's waiting count. In-flight tasks always come from the broker, so without it there is no
    observation either."""
    if error is not None or counts is None:
        return autoscaling.Observation(0, 0, replicas, error=error or "the queue was not read")
    ready = counts.ready if waiting is None else math.ceil(waiting)
    return autoscaling.Observation(
        ready,
        counts.in_flight,
        replicas,
        seen.arrival_rate,
        seen.mean_service_seconds,
        seen.service_scv,
        oldest_wait_seconds=oldest_wait,
        ready_replicas=ready_replicas,
    )


# -- the part of the memory kept in the status ----------------------------------------------------------


def rfc3339(epoch: float) -> str:
    return datetime.datetime.fromtimestamp(epoch, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def epoch(stamp: str) -> float:
    return datetime.datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def observed(computed: JobQueueStatus, written: Mapping[str, Any] | None, at: float) -> dict[str, Any]:
    """The tick's status body with `lastObservedTime`: the last write's stamp again while nothing else changed
    and it is younger than `status.OBSERVED_REFRESH_SECONDS` (the body then equals the last write, so nothing
    is written), else `at`: a status that stops moving says its operator stopped."""
    fresh = computed.model_copy(update={"last_observed_time": rfc3339(at)}).to_body()
    if written is None:
        return fresh
    stamp = JobQueueStatus.model_validate(written).last_observed_time
    if stamp is None or at - epoch(stamp) >= status.OBSERVED_REFRESH_SECONDS:
        return fresh
    again = computed.model_copy(update={"last_observed_time": stamp}).to_body()
    return again if again == written else fresh


def hold_steps(history: autoscaling.History, window: float) -> list[tuple[str, int]]:
    """The scale-down window as (until, replicas) steps: until `until`, hold at least `replicas`. Only the
    recommendations that can still be the highest one in the window, their end rounded up to the grid
    (a step the rounding hides behind a higher one that lasts as long is dropped)."""
    steps: list[tuple[float, int]] = []  # newest first, replicas rising
    for at, replicas in sorted(history.recommendations, reverse=True):
        until = math.ceil((at + window) / HOLD_GRID_SECONDS) * HOLD_GRID_SECONDS
        if replicas <= 0 or (steps and replicas <= steps[-1][1]):
            continue
        while steps and steps[-1][0] <= until:
            steps.pop()
        steps.append((until, replicas))
    return [(rfc3339(until), replicas) for until, replicas in reversed(steps)]


def seeded(queue: Queue, entry: Mapping[str, Any] | None) -> QueueMemory:
    """A queue's memory after an operator restart, from its status entry (written by an earlier tick)."""
    if not entry:
        return QueueMemory()
    window = float(queue.autoscaling.scale_down_stabilization_seconds) if queue.autoscaling else 0.0
    try:
        recommendations = tuple(
            (epoch(step["until"]) - window, int(step["replicas"])) for step in entry.get("scaleDownHold") or []
        )
        idle_since = epoch(entry["idleSince"]) if entry.get("idleSince") else None
    except (KeyError, TypeError, ValueError):
        return QueueMemory(last_scale_time=entry.get("lastScaleTime"))
    history = autoscaling.History(recommendations=recommendations, idle_since=idle_since)
    return QueueMemory(history=history, last_scale_time=entry.get("lastScaleTime"))


def _status_entries(body: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    return {str(item.get("name")): item for item in (body.get("status") or {}).get("queues") or []}


# -- the decision ---------------------------------------------------------------------------------------


def _query(
    queue: Queue, seen: Seen, remembered: QueueMemory, events: list[Event]
) -> tuple[float | None, str | None, str | None]:
    """(value, error, the error to remember) of the queue's Prometheus source; a new failure is a Warning."""
    if queue.name not in seen.queries:
        return None, None, None
    value, error = seen.queries[queue.name]
    if error is not None and remembered.query_error != error:
        message = f"queue {queue.name}: Prometheus query failed, holding replicas: {error}"
        events.append(Event("Warning", Reason.METRIC_QUERY_FAILED, message, cause=queue.name))
    return value, error, error


def plan(
    seen: Seen,
    memory: Mapping[str, QueueMemory],
    body: Mapping[str, Any],
    master: broker_replication.MasterSeen | None = None,
) -> TickPlan:
    """The tick's plan for the JobQueue `seen.jq`; `memory` as the last tick left it (empty after a restart:
    then it is seeded from the status in `body`); `master`: a Sentinel-managed broker's master as the last
    tick saw it (a change is a failover)."""
    jq: JobQueue = seen.jq
    now = seen.at
    entries = _status_entries(body)
    draining = [str(item.get("name")) for item in (body.get("status") or {}).get("drainingQueues") or []]
    is_paused = paused((body.get("metadata") or {}).get("annotations"))
    events: list[Event] = []
    kept: dict[str, QueueMemory] = {}
    series: dict[str, QueueSeries] = {}
    depths: dict[str, status.QueueDepth] = {}
    scales: list[Scale] = []
    decisions: list[tuple[str, str, str]] = []
    blind: list[str] = []
    for queue in jq.spec.queues:
        remembered = memory.get(queue.name) or seeded(queue, entries.get(queue.name))
        counts = seen.counts.get(queue.name)
        window = remembered.window
        if counts is not None:
            sample = rates.Sample(
                now,
                counts.ready + counts.in_flight,
                counts.completed,
                counts.run_seconds,
                counts.run_seconds_sq,
                counts.in_flight,
            )
            window = rates.add(window, sample)
        first_seen = remembered.first_seen  # an unread tick forgets nothing
        dated = None
        if counts is not None:
            first_seen = oldest.remember(first_seen, counts.tails, now)
            arrivals = rates.oldest_wait_at_least(window, counts.ready)
            dated = oldest.measured(oldest.oldest(counts.tails, first_seen, now), arrivals)
        desired, current, ready = status.deployment_replicas(seen.deployments.get(queue.name))
        leaving = leaving_workers(seen, queue.name, remembered.leaving, desired)
        learned = startup.learn(remembered.learned, (startup.pod_start(p) for p in _pods_of(seen, queue.name)))
        history, query_error = remembered.history, None
        hold: list[tuple[str, int]] = []
        if queue.autoscaled and queue.name in seen.deployments:
            policy = policy_for(queue, is_paused, startup.estimate(learned))
            waiting, error, query_error = _query(queue, seen, remembered, events)
            counted = None if counts is None else rates.oldest_wait(window, counts.ready)
            waited = planning_age(dated, counted)
            # Workers on a node being emptied are about to go: the autoscaler plans without them, and each
            # gets a replacement first (the surge), so the PodDisruptionBudget lets a drain evict it only
            # once the replacement is Ready elsewhere: a drain never leaves the queue unserved.
            base, base_ready = max(desired - leaving, 0), max(ready - leaving, 0)
            observed = observation(
                counts, error or seen.error, base, rates.estimate(window), waiting, waited, base_ready
            )
            decision = with_surge(autoscaling.decide(observed, policy, history, now), leaving)
            history = decision.history
            hold = hold_steps(history, policy.scale_down_stabilization_seconds)
            if observed.error is not None:
                blind.append(f"queue {queue.name}: {observed.error}")
            if decision.replicas != desired:
                scales.append(Scale(queue, _deployment_name(seen, queue.name), desired, decision))
            if decision.direction != "none" or decision.reason in HELD:
                decisions.append((queue.name, decision.direction, decision.reason))
        kept[queue.name] = replace(
            remembered,
            history=history,
            window=window,
            query_error=query_error,
            learned=learned,
            first_seen=first_seen,
            leaving=leaving,
        )
        age, age_source = (None, None) if dated is None else dated
        ready_tasks = None if counts is None else counts.ready
        in_flight = None if counts is None else counts.in_flight
        by_priority = () if counts is None else counts.ready_by_step
        dead_letters = None if counts is None else counts.dead_letters
        series[queue.name] = QueueSeries(
            ready_tasks, in_flight, age, desired, current, ready, by_priority, dead_letters, age_source
        )
        events += _dead_letter_events(seen.jq, queue.name, remembered.dead_letters, dead_letters)
        known = remembered.dead_letters if dead_letters is None else dead_letters  # an unread tick forgets nothing
        kept[queue.name] = replace(kept[queue.name], dead_letters=known)
        idle = history.idle_since
        depths[queue.name] = status.QueueDepth(
            ready_tasks,
            in_flight,
            age,
            dead_letters=dead_letters,
            last_scale_time=remembered.last_scale_time,
            oldest_age_source=age_source,
            idle_since=None if idle is None or not queue.autoscaled else rfc3339(idle),
            hold=hold,
        )
    unserved = _unserved(seen)
    replication, failovers = None, None
    if seen.members is not None:  # a Sentinel-managed broker
        replication = broker_replication.assess(seen.members)
        master, failover = broker_replication.follow(master, seen.members)
        failovers = 0 if failover is None else 1
        if failover is not None:
            events.append(failover.event(seen.members.master_name))
    managed = jq.spec.broker.managed
    bounds = None if managed is None else redis_build.memory_bounds(managed)
    memory_verdict = None if seen.memory is None else broker_memory.assess(*seen.memory, bounds)
    conditions = {
        name: verdict
        for name, verdict in (
            (status.SCALING_ACTIVE, _scaling_condition(jq, blind, seen, is_paused)),
            (status.QUEUES_SERVED, _served_condition(seen, unserved)),
            (status.BROKER_MEMORY_AVAILABLE, _memory_condition(seen.memory, bounds, memory_verdict)),
            (status.RESULT_BACKEND_READY, result_backend_condition(seen, previous_conditions(body))),
            (status.BROKER_AVAILABLE, None if replication is None else replication.verdict),
        )
        if verdict is not None
    }
    was = {condition.type: condition.status for condition in previous_conditions(body)}
    events += [  # a condition turning False is a Warning, once (the status says it for as long as it lasts);
        # a pause is someone's choice: said, but not a Warning
        Event("Normal" if verdict[1] == Reason.AUTOSCALING_PAUSED else "Warning", verdict[1], verdict[2])
        for type_, verdict in conditions.items()
        if verdict[0] == "False" and was.get(type_) != "False"
    ]
    deployments = [naming.worker_deployment(jq.name, q) for q in {q.name for q in jq.spec.queues} | set(draining)]
    lost = nodes.lost(seen.node_view, (nodes.node_of(pod) for pod in seen.worker_pods.values()))
    restore = redelivery.dead(seen.incarnations, seen.worker_pods, jq.namespace, deployments, lost)
    lost_pods = redelivery.on_lost_nodes(seen.worker_pods, seen.incarnations, lost) if seen.registry_read else []
    used, limit = seen.memory if seen.memory is not None else (None, None)
    return TickPlan(
        scales=scales,
        memory=kept,
        series=series,
        depths=depths,
        decisions=decisions,
        conditions=conditions,
        events=events,
        broker_up=seen.error is None,
        restore=restore,
        delete_pods=lost_pods,
        unserved=unserved,
        draining=_draining_tasks(seen, draining),
        broker=BrokerSeries(
            seen.unserved,
            used,
            limit,
            replicas=None if replication is None or not replication.replicas else dict(replication.replicas),
            lag_seconds=None if replication is None else replication.lag_seconds,
            lag_bytes=None if replication is None else replication.lag_bytes,
            availability=None if replication is None else replication.verdict[1],
        ),
        maxmemory=None if memory_verdict is None else memory_verdict.set_maxmemory,
        master=master,
        failovers=failovers,
    )


def leaving_workers(seen: Seen, queue: str, remembered: int, desired: int) -> int:
    """How many of the queue's workers sit on nodes being emptied (cordoned, or marked for removal by the
    cluster autoscaler) and are not being deleted yet: as read now, else as last read (None if unknown)."""
    if desired == 0:
        return 0
    if seen.node_view is None:
        return remembered if not seen.worker_pods else 0  # Pods read but none bound: none is leaving
    return sum(
        1
        for pod in _pods_of(seen, queue)
        if not (pod.get("metadata") or {}).get("deletionTimestamp")
        and nodes.leaving(seen.node_view, nodes.node_of(pod))
    )


def with_surge(decision: autoscaling.Decision, leaving: int) -> autoscaling.Decision:
    """The autoscaler's decision (made without the `leaving` workers) plus one replica for each of them,
    unless the queue goes to zero (nothing to keep serving)."""
    if leaving == 0 or decision.replicas == 0:
        return decision
    return replace(
        decision,
        replicas=decision.replicas + leaving,
        message=f"{decision.message}; +{leaving} while {leaving} worker(s) leave a node being drained",
    )


def _pods_of(seen: Seen, queue: str) -> list[Manifest]:
    """The worker Pods of the queue whose real name is `queue`."""
    return [p for p in seen.worker_pods.values() if naming.queue_of(p["metadata"]) == queue]


def _deployment_name(seen: Seen, queue: str) -> str:
    return str(seen.deployments[queue]["metadata"]["name"])


def _dead_letter_events(jq: JobQueue, queue: str, before: int | None, now: int | None) -> list[Event]:
    """A Warning when a queue's dead-letter list grew since the last tick, or holds letters at the first
    look (a task can be dead-lettered before the first tick; a restarted operator says it once more).
    It names `kubectl jobqueue deadletters`, which reads the broker from outside: a queue whose tasks all
    failed is often at zero workers, where `kubectl exec` into a worker has nothing to exec into."""
    if now is None or now <= (before or 0):
        return []
    grown = f"{now - before} more tasks dead-lettered" if before is not None else "tasks were dead-lettered"
    command = f"kubectl jobqueue deadletters {jq.name} {shlex.quote(queue)} -n {jq.namespace}"
    message = f"queue {queue}: {grown} ({now} in its list); see `{command}`, then `{command} requeue|purge ...`"
    return [Event("Warning", Reason.DEAD_LETTERS, message, cause=queue)]


def _draining_tasks(seen: Seen, draining: Sequence[str]) -> dict[str, int | None]:
    listed = {queue.name for queue in seen.jq.spec.queues}
    tasks: dict[str, int | None] = {}
    for name in draining:
        if name not in listed:
            counts = seen.counts.get(name)
            tasks[name] = None if counts is None else counts.ready + counts.in_flight
    return tasks


def _unserved(seen: Seen) -> list[UnservedQueue]:
    return [UnservedQueue(name=name, tasks=tasks) for name, tasks in sorted((seen.unserved or {}).items())]


def _served_condition(seen: Seen, unserved: Sequence[UnservedQueue]) -> status.Verdict | None:
    if seen.unserved is None:
        return None
    if not unserved:
        return "True", Reason.ALL_QUEUES_SERVED, "every broker queue that holds tasks is in the spec"
    names = ", ".join(queue.name for queue in unserved)
    purge = contract.purge_command("NAME")
    refused = [(q.name, problem) for q in unserved if (problem := models.queue_name_problem(q.name)) is not None]
    if not refused:
        advice = f"add a queue of that name, fix the routing that sends them there, or purge them ({purge})"
    else:  # only advise adding what the schema accepts
        addable = [q.name for q in unserved if models.queue_name_problem(q.name) is None]
        cannot = "; ".join(f"{name} cannot be a queue of a JobQueue ({problem})" for name, problem in refused)
        advice = f"{cannot}: fix the routing that sends tasks there or purge them ({purge})"
        if addable:
            advice = f"add a queue named {', '.join(addable)}; {advice}"
    message = f"tasks wait in broker queues no queue of this JobQueue serves: {names}; {advice}"
    return "False", Reason.UNSERVED_QUEUES, message


def _memory_condition(
    memory: tuple[int, int] | None, bounds: broker_memory.Bounds | None, verdict: broker_memory.Verdict | None
) -> status.Verdict | None:
    if memory is None or verdict is None:
        return None  # not read, or no limit: Redis grows until its container's limit
    used, limit = memory
    if bounds is not None and verdict.reserve_open:
        drained = mib(bounds.normal * broker_memory.DRAINED_SHARE)
        now = f"the broker uses {mib(used)} of its {mib(bounds.normal)} ({used / bounds.normal:.0%})"
        if limit == bounds.reserve and used >= bounds.reserve * broker_memory.FULL_SHARE:  # opened before
            return (
                "False",
                Reason.BROKER_MEMORY_FULL,
                (
                    f"{now} and its reserve ({mib(bounds.reserve)}) is full too: producers send faster than the "
                    "workers drain it; Redis refuses new tasks (noeviction): add workers or slow the producers"
                ),
            )
        if verdict.full:
            return (
                "False",
                Reason.BROKER_MEMORY_FULL,
                (
                    f"{now}: it refuses new tasks (noeviction) once over it; maxmemory raised to its reserve, "
                    f"{mib(bounds.reserve)}, so workers can take and finish tasks; lowered again below {drained}"
                ),
            )
        return (
            "False",
            Reason.BROKER_MEMORY_DRAINING,
            (f"{now}, draining: maxmemory stays at its reserve, {mib(bounds.reserve)}, until below {drained}"),
        )
    if verdict.full:
        message = (
            f"the broker uses {mib(used)} of its {mib(limit)} ({used / limit:.0%}): it refuses new tasks "
            "(noeviction); over its maxmemory it refuses every transaction too, so workers cannot take tasks "
            "either: raise it at run time (redis-cli CONFIG SET maxmemory) or purge (docs/faults.md)"
        )
        return "False", Reason.BROKER_MEMORY_FULL, message
    return "True", Reason.BROKER_MEMORY_AVAILABLE, f"the broker uses {used / limit:.0%} of its memory"


def _paused_message(jq: JobQueue, counts: Mapping[str, QueueCounts], read: bool) -> str:
    """What a paused JobQueue's ScalingActive says: that it is paused, how to resume, and the tasks that wait
    meanwhile in its autoscaled queues (one held at zero workers runs none of them)."""
    resume = f"kubectl annotate jobqueue {jq.name} -n {jq.namespace} {PAUSE_ANNOTATION}-"
    message = f"autoscaling is paused ({PAUSE_ANNOTATION}=true): every queue holds its replicas; to resume: {resume}"
    held = [q.name for q in jq.spec.queues if q.autoscaled and q.name in counts]
    waiting = {name: counts[name].ready for name in held if counts[name].ready}
    if waiting:
        where = ", ".join(f"{queue} {tasks}" for queue, tasks in waiting.items())
        message += f"; {sum(waiting.values())} tasks wait meanwhile ({where})"
    elif not read:
        message += "; the broker could not be read, so the tasks waiting are unknown"
    return message


def result_backend_condition(seen: Seen, previous: Sequence[Condition]) -> status.Verdict | None:
    """ResultBackendReady from what the running workers report next to their heartbeats: False while any
    cannot reach the result backend it stores results in (their report names its URL and the fix). Kept as
    it was while no worker runs or the broker was not read (nothing new is known), unless the spec changed
    since (a fix: it is for new workers to say); absent until a worker reported."""
    running = [incarnation for incarnation in seen.incarnations if incarnation.alive]
    if seen.error is not None or not running:
        kept = next((c for c in previous if c.type == status.RESULT_BACKEND_READY), None)
        if kept is None or kept.observed_generation != seen.jq.generation:
            return None
        return kept.status, kept.reason, kept.message
    problems: dict[str, dict[str, list[str]]] = {}  # queue -> problem -> Pods
    for incarnation in running:
        if incarnation.result_backend_problem:
            pods = problems.setdefault(incarnation.queue, {}).setdefault(incarnation.result_backend_problem, [])
            pods.append(incarnation.pod)
    if not problems:
        return "True", Reason.RESULT_BACKEND_REACHABLE, "every running worker reaches its result backend"
    said = []
    for queue, found in sorted(problems.items()):
        for problem, pods in found.items():
            who = f"Pod {pods[0]}" if len(pods) == 1 else f"{len(pods)} Pods ({', '.join(sorted(pods))})"
            said.append(f"queue {queue} ({who}): {problem}")
    return "False", Reason.RESULT_BACKEND_UNREACHABLE, "; ".join(said)


def _scaling_condition(jq: JobQueue, blind: Sequence[str], seen: Seen, is_paused: bool) -> status.Verdict | None:
    if not any(q.autoscaled for q in jq.spec.queues):
        return None
    if is_paused:
        return "False", Reason.AUTOSCALING_PAUSED, _paused_message(jq, seen.counts, seen.error is None)
    if blind:
        return "False", Reason.METRICS_UNAVAILABLE, "holding replicas: " + "; ".join(blind)
    return "True", Reason.METRICS_AVAILABLE, "the autoscaler reads every autoscaled queue"


def previous_conditions(body: Mapping[str, Any]) -> list[Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    return [Condition.model_validate(item) for item in raw]
