"""The autoscaler's decision: (observation, policy, history, now) -> replicas, with a reason.

PURE: no kopf, kubernetes or redis here, so the operator's timer handler and the simulator in
bench/autoscale run the very same code. The handler measures (broker.py), calls `decide` once per
queue per tick, stores `Decision.history` for the next tick, and applies `Decision.replicas`.

Rules, in the order `decide` applies them:
1. paused -> hold; metric source failed -> hold (and restart the idle clock: never go to zero blind).
2. Recommendation: backlog mode `ceil((ready + inFlight) / targetTasksPerWorker)`; latency mode
   (targetWaitSeconds) the fewest slots that keep the predicted wait under the target (Erlang C) plus
   what drains the current backlog within the target; both set -> the larger. Never below what the
   in-flight tasks occupy, never above maxReplicas, never below minReplicas.
3. Nothing waiting or in flight for idleSecondsBeforeZero (and minReplicas 0) -> zero. Otherwise a
   running queue keeps at least one worker, and a queue at zero wakes on its first waiting task.
4. Up: at once, by at most max(current, scaleUpPods) pods per decision. Down: only to the highest
   recommendation of the last scaleDownStabilizationSeconds.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Final, Literal

DELETION_COST_ANNOTATION: Final = "controller.kubernetes.io/pod-deletion-cost"

Direction = Literal["up", "down", "none"]


class Reason(StrEnum):
    """Why the replicas are what they are: a bounded set, fit for an Event reason and a metric label."""

    PAUSED = "Paused"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    BACKLOG = "Backlog"
    LATENCY = "Latency"
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
    latency mode. The last three fields are operator-wide tuning, not CRD fields.
    """

    min_replicas: int = 0
    max_replicas: int = 10
    concurrency: int = 1
    target_tasks_per_worker: int | None = None
    target_wait_seconds: float | None = None
    scale_down_stabilization_seconds: float = 300.0
    idle_seconds_before_zero: float = 300.0
    paused: bool = False
    wait_quantile: float = 0.99
    """Latency mode: the share of tasks that should start within target_wait_seconds."""
    scale_up_pods: int = 16
    """Scale-up bound: at most max(current replicas, scale_up_pods) more pods per decision."""

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

    if policy.min_replicas == 0 and idle_for >= policy.idle_seconds_before_zero:
        wanted, reason, message = 0, Reason.IDLE_TO_ZERO, f"idle for {policy.idle_seconds_before_zero:g}s"
    elif wanted == 0 and (current > 0 or observation.ready > 0):
        wanted = 1
        reason = Reason.WAKE_FROM_ZERO if current == 0 else Reason.IDLE
        message = "a task is waiting" if current == 0 else "idle, but not yet for idleSecondsBeforeZero"

    window_start = now - policy.scale_down_stabilization_seconds
    kept = (*((t, r) for t, r in history.recommendations if t > window_start), (now, wanted))
    new_history = History(recommendations=kept, idle_since=idle_since)

    if wanted > current:
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
    candidates.append((math.ceil(in_flight / k), Reason.IN_FLIGHT, f"{in_flight} tasks in flight need their workers"))
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
    max_slots = policy.max_replicas * k
    steady = slots_for_wait(load, service, target, policy.wait_quantile, observation.service_scv, max_slots)
    drain = math.ceil(load + observation.ready * service / target)
    slots = max(steady, drain)
    message = (
        f"{rate:.3g}/s x {service:.3g}s = {load:.3g} busy slots; {steady} slots keep "
        f"p{policy.wait_quantile * 100:g} wait under {target:g}s; {drain} drain {observation.ready} waiting"
    )
    return math.ceil(slots / k), Reason.LATENCY, message


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
