"""The autoscaler's decision: (observation, policy, history, now) -> replicas, with a reason.

PURE: no kopf, kubernetes or redis here, so the operator's tick and the simulator (simulator/jobqueue_sim)
run the very same code. The tick measures (broker.py, rates.py), calls `decide` once per queue, keeps
`Decision.history` for the next tick, and applies `Decision.replicas`.

Rules, in the order `decide` applies them:
1. paused -> hold; metric source failed -> hold (and restart the idle clock: never go to zero blind).
2. Recommendation. Backlog mode: `ceil((ready + inFlight) / targetTasksPerWorker)`, every task a slot at
   once. Latency mode (targetWaitSeconds): the slots that start every waiting task within the target,
   counting that a new pod serves only after a start-up (`drain_slots`); and, only when a new pod cannot
   serve within half the target (`reactive`), at least the spare slots that keep the stationary wait
   under the target (Erlang C). Both modes set -> the larger. Never down to fewer pods than the in-flight
   tasks occupy (they never ask for pods of their own: their slots exist), never above maxReplicas, never
   below minReplicas.
3. Zero: nothing waiting or in flight for idleSecondsBeforeZero (and minReplicas 0). Unset, that is
   automatic: an idle pod is kept only while the next task is due sooner than a new pod could start
   (arrival rate x start-up >= 1), and then for at most one start-up (ski rental); otherwise it goes at
   once. Before that a running queue keeps one worker; a queue at zero wakes on its first waiting task.
4. Up: at once, by at most max(current, scaleUpPods) pods per decision; in latency mode, while no run
   time is known yet and pods are still starting, no further pods (the first ones will tell). Down: only
   to the highest recommendation of the last scaleDownStabilizationSeconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Literal

DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"
DEFAULT_STARTUP_SECONDS: Final = 10.0
"""A pod's start-up (creation to taking tasks) until the queue's own is known (startupSeconds, startup.py)."""

Direction = Literal["up", "down", "none"]


class Reason(StrEnum):
    """Why the replicas are what they are: a bounded set, fit for an Event reason and a metric label."""

    PAUSED = "Paused"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    BACKLOG = "Backlog"
    LATENCY = "Latency"
    DRAIN = "Drain"
    IN_FLIGHT = "InFlight"
    WAKE_FROM_ZERO = "WakeFromZero"
    IDLE = "Idle"
    IDLE_TO_ZERO = "IdleToZero"
    MIN_REPLICAS = "MinReplicas"
    MAX_REPLICAS = "MaxReplicas"
    STABILIZING = "Stabilizing"
    SCALE_UP_LIMITED = "ScaleUpLimited"


@dataclass(frozen=True, slots=True)
class Policy:
    """One queue's `autoscaling` block (CRD names in snake case) plus its concurrency.

    `target_tasks_per_worker` None means the queue's concurrency. Setting `target_wait_seconds` selects
    latency mode. `idle_seconds_before_zero` None is the automatic rule (module docstring, rule 3). The
    fields after `paused` are not CRD fields: operator-wide tuning, and what is known of the queue's pods.
    """

    min_replicas: int = 0
    max_replicas: int = 10
    concurrency: int = 1
    target_tasks_per_worker: int | None = None
    target_wait_seconds: float | None = None
    scale_down_stabilization_seconds: float = 0.0
    idle_seconds_before_zero: float | None = None
    paused: bool = False
    wait_quantile: float = 0.99
    """Latency mode: the share of tasks that should start within target_wait_seconds in a steady state."""
    scale_up_pods: int = 16
    """Scale-up bound: at most max(current replicas, scale_up_pods) more pods per decision."""
    startup_seconds: float = DEFAULT_STARTUP_SECONDS
    """How long a new pod takes from creation to its first task: the CRD's startupSeconds, or what
    startup.py learned from the queue's Pods."""
    tick_seconds: float = 5.0
    """How often `decide` runs: a pod asked for now may have been needed up to one tick ago."""

    def __post_init__(self) -> None:
        if not 0 <= self.min_replicas <= self.max_replicas:
            raise ValueError("need 0 <= min_replicas <= max_replicas")
        if self.concurrency < 1 or self.scale_up_pods < 1:
            raise ValueError("concurrency and scale_up_pods must be at least 1")
        if self.target_tasks_per_worker is not None and self.target_tasks_per_worker < 1:
            raise ValueError("target_tasks_per_worker must be at least 1")
        if self.target_wait_seconds is not None and self.target_wait_seconds <= 0:
            raise ValueError("target_wait_seconds must be positive")
        if not 0.0 < self.wait_quantile < 1.0:
            raise ValueError("wait_quantile must be between 0 and 1")
        if self.startup_seconds < 0 or self.tick_seconds <= 0:
            raise ValueError("startup_seconds must be >= 0 and tick_seconds positive")


@dataclass(frozen=True, slots=True)
class Observation:
    """What the metric source saw for one queue at one tick.

    `ready` counts waiting tasks over every priority sub-queue; `in_flight` counts tasks delivered to a
    worker and not yet acked (reserved or running). Rates are smoothed by the measuring side (None:
    not known yet). `error` set means the source failed and the counts are meaningless.
    """

    ready: int
    in_flight: int
    replicas: int
    arrival_rate: float | None = None
    """Tasks per second entering the queue."""
    mean_service_seconds: float | None = None
    """Mean run time of recently finished tasks."""
    service_scv: float = 1.0
    """Squared coefficient of variation of the run time (1 for exponential); heavier tails need more slots."""
    error: str | None = None
    oldest_wait_seconds: float | None = None
    """How long the oldest waiting task has waited (stamped by the producer, or rates.oldest_wait);
    None: unknown, taken as 0."""
    ready_replicas: int | None = None
    """Pods that take tasks; None: unknown, all `replicas` are taken as ready."""


@dataclass(frozen=True, slots=True)
class History:
    """What `decide` remembers between ticks; start with `History()` and keep the one it returns."""

    recommendations: tuple[tuple[float, int], ...] = ()
    """(time, recommended replicas) within the stabilization window, oldest first."""
    idle_since: float | None = None
    """Since when nothing has been waiting or in flight (None: busy, or unknown)."""


@dataclass(frozen=True, slots=True)
class Decision:
    replicas: int
    reason: Reason
    message: str
    direction: Direction
    recommendation: int
    """What the rules asked for before the scale-up bound and the stabilization window."""
    history: History = field(default_factory=History)


def decide(observation: Observation, policy: Policy, history: History, now: float) -> Decision:
    """The replicas a queue should have now, and why."""
    current = observation.replicas
    if policy.paused:
        return _hold(current, Reason.PAUSED, "autoscaling is paused", history)
    if observation.error is not None:
        held = replace(history, idle_since=None)
        return _hold(current, Reason.METRICS_UNAVAILABLE, f"holding: {observation.error}", held)

    busy = observation.ready > 0 or observation.in_flight > 0
    idle_since = None if busy else (now if history.idle_since is None else history.idle_since)
    idle_for = -1.0 if idle_since is None else now - idle_since
    wanted, reason, message = _recommend(observation, policy)

    keep_idle = idle_keep_seconds(observation, policy)
    if policy.min_replicas == 0 and idle_for >= keep_idle:
        wanted, reason, message = 0, Reason.IDLE_TO_ZERO, f"idle for {idle_for:g}s (keep {keep_idle:g}s)"
    elif wanted == 0 and (current > 0 or observation.ready > 0):
        wanted = 1
        reason = Reason.WAKE_FROM_ZERO if current == 0 else Reason.IDLE
        message = "a task is waiting" if current == 0 else f"idle, kept for up to {keep_idle:g}s"

    window_start = now - policy.scale_down_stabilization_seconds
    kept = (*((t, r) for t, r in history.recommendations if t > window_start), (now, wanted))
    new_history = History(recommendations=kept, idle_since=idle_since)

    if wanted > current:
        if _learning(observation, policy):
            message = f"{message}; waiting for the starting pods' first run times before adding more"
            return Decision(current, Reason.SCALE_UP_LIMITED, message, "none", wanted, new_history)
        limit = current + max(current, policy.scale_up_pods)
        if wanted > limit:
            message = f"{message}; limited to {limit} this step (asked {wanted})"
            return Decision(limit, Reason.SCALE_UP_LIMITED, message, "up", wanted, new_history)
        return Decision(wanted, reason, message, "up", wanted, new_history)
    if wanted < current and reason is not Reason.IDLE_TO_ZERO:
        stable = min(max(r for _, r in kept), policy.max_replicas)
        if stable >= current:
            message = f"{message}; holding {current} for the {policy.scale_down_stabilization_seconds:g}s window"
            return Decision(current, Reason.STABILIZING, message, "none", wanted, new_history)
        if stable > wanted:
            message = f"{message}; {stable} is the highest recommendation in the window"
            return Decision(stable, Reason.STABILIZING, message, "down", wanted, new_history)
    direction: Direction = "up" if wanted > current else "down" if wanted < current else "none"
    return Decision(wanted, reason, message, direction, wanted, new_history)


def idle_keep_seconds(observation: Observation, policy: Policy) -> float:
    """How long an idle queue keeps its pods before going to zero.

    The set idleSecondsBeforeZero, else the ski-rental rule: an idle pod costs its seconds, releasing it
    costs a start-up when the next task comes. With arrivals at rate r the next task is due in 1/r, so
    keep the pods (for at most one start-up) only when r x start-up >= 1."""
    if policy.idle_seconds_before_zero is not None:
        return policy.idle_seconds_before_zero
    rate = observation.arrival_rate or 0.0
    return policy.startup_seconds if rate * policy.startup_seconds >= 1.0 else 0.0


def _learning(observation: Observation, policy: Policy) -> bool:
    """Latency mode with no run time known yet while pods are still starting: their first runs will say
    how many more pods the backlog needs, before any of those could have started anyway."""
    return (
        policy.target_wait_seconds is not None
        and observation.mean_service_seconds is None
        and observation.ready_replicas is not None
        and observation.replicas > 0
        and observation.ready_replicas < observation.replicas
    )


def _hold(current: int, reason: Reason, message: str, history: History) -> Decision:
    return Decision(current, reason, message, "none", current, history)


def _recommend(observation: Observation, policy: Policy) -> tuple[int, Reason, str]:
    """Replicas the load asks for, clamped to [min, max], before time-based rules."""
    k = policy.concurrency
    ready, in_flight = observation.ready, observation.in_flight
    candidates: list[tuple[int, Reason, str]] = []
    latency = _latency_replicas(observation, policy)
    if latency is not None:
        candidates.append(latency)
    if latency is None or policy.target_tasks_per_worker is not None:
        per_worker = policy.target_tasks_per_worker or k
        pods = math.ceil((ready + in_flight) / per_worker)
        candidates.append((pods, Reason.BACKLOG, f"{ready} waiting + {in_flight} in flight at {per_worker}/worker"))
    held = min(math.ceil(in_flight / k), observation.replicas)  # a floor for scale-down; their slots exist
    candidates.append((held, Reason.IN_FLIGHT, f"{in_flight} tasks in flight keep their workers"))
    pods, reason, message = max(candidates, key=lambda c: c[0])
    if pods > policy.max_replicas:
        return policy.max_replicas, Reason.MAX_REPLICAS, f"{message}: {pods} capped at maxReplicas"
    if pods < policy.min_replicas:
        return policy.min_replicas, Reason.MIN_REPLICAS, f"{message}: {pods} raised to minReplicas"
    return pods, reason, message


def _latency_replicas(observation: Observation, policy: Policy) -> tuple[int, Reason, str] | None:
    """Latency mode's pods, or None when not in latency mode or the rates are not known yet."""
    target = policy.target_wait_seconds
    rate, service = observation.arrival_rate, observation.mean_service_seconds
    if target is None or rate is None or service is None or service <= 0:
        return None
    k = policy.concurrency
    load = max(rate, 0.0) * service
    steady = 0
    if not reactive(policy):
        max_slots = policy.max_replicas * k
        steady = slots_for_wait(load, service, target, policy.wait_quantile, observation.service_scv, max_slots)
    drain = drain_slots(observation, policy, load, service, target)
    if drain > steady:
        return (
            math.ceil(drain / k),
            Reason.DRAIN,
            f"{drain} slots start the {observation.ready} waiting within {target:g}s "
            f"(oldest waited {observation.oldest_wait_seconds or 0.0:.0f}s, a new pod starts in "
            f"{policy.startup_seconds:.0f}s, run time {service:.3g}s)",
        )
    if reactive(policy):
        message = f"nothing waits; {load:.3g} busy slots (a new pod serves within half the {target:g}s target)"
    else:
        message = (
            f"{rate:.3g}/s x {service:.3g}s = {load:.3g} busy slots; {steady} slots keep "
            f"p{policy.wait_quantile * 100:g} wait under {target:g}s"
        )
    return math.ceil(steady / k), Reason.LATENCY, message


def reactive(policy: Policy) -> bool:
    """Whether a pod asked for when a task starts waiting serves within half the wait target. Then the
    waiting tasks themselves are the signal (`drain_slots`) and no spare slots are kept: spare slots cost
    more than the start-ups they save (docs/autoscaling.md has the measurements). Otherwise the spare slots
    of Erlang C are kept, since by the time a new pod serves, the target has mostly passed."""
    assert policy.target_wait_seconds is not None
    return policy.startup_seconds + policy.tick_seconds <= policy.target_wait_seconds / 2


INFLOW_SHARE: Final = 0.5
"""Of the arrivals expected while the backlog drains, the share planned for: all of them double-counts a
batch (it is both the backlog and the recent arrival rate); none of them lags a rising load."""
RESIDUAL_SHARE: Final = 0.5
"""An in-flight task still holds its slot for about half a run time (more for heavy tails, less for
regular ones)."""


def drain_slots(observation: Observation, policy: Policy, load: float, service: float, target: float) -> int:
    """The fewest slots that start every waiting task within `target` of its arrival.

    The oldest waiting task has `target - oldest wait` left (at least one tick); by then the slots must
    have done the waiting tasks' work, what the running tasks still hold, and a share of the arrivals
    meanwhile. Ready pods work the whole time, starting pods from about half a start-up on, and pods
    asked for now only after a whole start-up: so a backlog that the present pods can clear in time asks
    for no more, and one that they cannot asks for what makes up the difference in the time that is left
    after a start-up. 0 when nothing waits.
    """
    if observation.ready <= 0:
        return 0
    k = policy.concurrency
    left = max(target - (observation.oldest_wait_seconds or 0.0), policy.tick_seconds)
    work = observation.ready * service + observation.in_flight * service * RESIDUAL_SHARE + INFLOW_SHARE * load * left
    ready = observation.replicas if observation.ready_replicas is None else observation.ready_replicas
    starting = max(observation.replicas - ready, 0)
    capacity = ready * k * left + starting * k * max(left - policy.startup_seconds / 2, 0.0)
    if capacity >= work:
        return math.ceil(work / left)
    new_pods_serve = max(left - policy.startup_seconds, policy.tick_seconds)
    return math.ceil(observation.replicas * k + (work - capacity) / new_pods_serve)


def slots_for_wait(
    load: float, service_seconds: float, target_wait: float, quantile: float, scv: float, limit: int
) -> int:
    """Fewest slots c with P(wait > target_wait) <= 1 - quantile, at most `limit`.

    M/M/c (Erlang C): P(wait > t) = C(c, A) * exp(-(c - A) * t / E[S]). For other run-time
    distributions the decay is divided by (1 + scv) / 2, the usual Kingman-style correction. Erlang B
    by its recurrence, which is stable and costs O(c).
    """
    if load <= 0:
        return 0
    allowed = 1.0 - quantile
    decay_per_slot = target_wait / service_seconds * 2.0 / (1.0 + max(scv, 0.0))
    erlang_b = 1.0
    for c in range(1, limit + 1):
        erlang_b = load * erlang_b / (c + load * erlang_b)
        if c <= load:
            continue
        erlang_c = c * erlang_b / (c - load * (1.0 - erlang_b))
        if erlang_c * math.exp(-(c - load) * decay_per_slot) <= allowed:
            return c
    return limit


def deletion_costs(busy_slots: Mapping[str, int]) -> dict[str, str]:
    """pod-deletion-cost annotation values so the ReplicaSet removes idle pods first.

    The ReplicaSet deletes the lowest cost first, so a pod's cost is the number of tasks it is running:
    idle pods go first, then the least busy. Set them just before lowering replicas.
    """
    return {pod: str(max(busy, 0)) for pod, busy in busy_slots.items()}
