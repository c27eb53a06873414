"""Who decides the replicas: the operator's own `decide`, KEDA (default and tuned), and static-peak.

The KEDA model follows its documented semantics (research notes B1, B2): the redis list scaler reads
LLEN of one list (the plain queue name, so neither Celery's priority sub-queues nor tasks already in a
worker); KEDA itself polls every `pollingInterval` and owns 0 <-> 1 (activation above 0, back to zero
`cooldownPeriod` after the last active poll); the HPA owns 1 <-> N on its 15 s loop with an
AverageValue target (desired = ceil(LLEN / listLength), unchanged within the 10 % tolerance), scale-up
limited to max(100 %, 4 pods) per period, scale-down to the highest recommendation in its
stabilization window, and never below 1.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.autoscale.sim import Config, View
from bench.autoscale.trace import TaskSpec
from jobqueue_operator.autoscaling import History, Observation, Policy, decide, slots_for_wait

NAMES = ("jobqueue-backlog", "jobqueue-latency", "keda-default", "keda-tuned", "static-peak")


@dataclass(frozen=True, slots=True)
class Knobs:
    """The benchmark's settings shared by every policy on one trace."""

    slo_wait_s: float = 30.0
    stabilization_s: float = 60.0
    """Ours: scaleDownStabilizationSeconds (keda-tuned's HPA window is 60 s too)."""
    idle_before_zero_s: float = 60.0
    """Ours: idleSecondsBeforeZero."""
    operator_tick_s: float = 5.0
    operator_first_tick_s: float = 0.0
    """Ours: when the first tick falls, i.e. the operator's timer phase against the trace (the replay on the
    cluster measures it; 0 is the worst case for a task arriving just after the start)."""


class Jobqueue:
    """The operator's autoscaler: every tick, measure as broker.py will, then call `decide`."""

    graceful = True

    def __init__(self, name: str, policy: Policy, tick_s: float, first_tick_s: float = 0.0) -> None:
        self.name, self.policy, self.tick_s = name, policy, tick_s
        self.history = History()
        self.next_tick = first_tick_s
        self.reasons: Counter[str] = Counter()

    def start(self, config: Config) -> int:
        return self.policy.min_replicas

    def tick(self, view: View) -> int | None:
        if view.now < self.next_tick:
            return None
        self.next_tick = view.now + self.tick_s
        rate, service, scv = measure(view)
        observation = Observation(view.ready, view.in_flight, view.replicas, rate, service, scv)
        decision = decide(observation, self.policy, self.history, view.now)
        self.history = decision.history
        if decision.direction != "none":
            self.reasons[decision.reason] += 1
        return decision.replicas


def measure(view: View) -> tuple[float | None, float | None, float]:
    """What broker.py is to provide: arrivals per second over the last 60 s, and the mean run time and its
    squared coefficient of variation over the last 300 s of completions. (A max of a 30 s and a 120 s
    window cost 2-8 % more worker-seconds for no better attainment on the shipped traces.)"""
    span = max(min(60.0, view.now), 5.0)
    rate = sum(1 for t in view.recent_arrivals if t > view.now - 60.0) / span if view.arrived else None
    runs = [run for _, run in view.recent_runs]
    if not runs:
        return rate, None, 1.0
    mean = statistics.fmean(runs)
    scv = statistics.pvariance(runs) / mean**2 if len(runs) > 1 and mean > 0 else 1.0
    return rate, mean if mean > 0 else None, scv


@dataclass
class Keda:
    """A ScaledObject with one redis list trigger, and the HPA it creates."""

    name: str
    list_length: int
    polling_s: float
    min_replicas: int
    max_replicas: int
    stabilization_s: float
    cooldown_s: float = 300.0
    hpa_period_s: float = 15.0
    tolerance: float = 0.1
    graceful: bool = False
    last_active: float | None = None
    recommendations: list[tuple[float, int]] = field(default_factory=list)
    reasons: Counter[str] = field(default_factory=Counter)

    def start(self, config: Config) -> int:
        return self.min_replicas

    def tick(self, view: View) -> int | None:
        metric = view.ready_by_step[0]  # LLEN of the plain list only
        replicas = view.replicas
        if _every(view.now, self.polling_s) and self.min_replicas == 0:
            if metric > 0:
                self.last_active = view.now
                if replicas == 0:
                    self.reasons["activate"] += 1
                    return 1
            elif replicas > 0 and view.now - (self.last_active or 0.0) >= self.cooldown_s:
                self.reasons["cooldown"] += 1
                return 0
        if not _every(view.now, self.hpa_period_s) or replicas == 0:
            return None
        if abs(metric / (self.list_length * replicas) - 1.0) <= self.tolerance:
            wanted = replicas
        else:
            wanted = math.ceil(metric / self.list_length)
        wanted = min(max(wanted, self.min_replicas, 1), self.max_replicas)
        self.recommendations = [(t, r) for t, r in self.recommendations if t > view.now - self.stabilization_s]
        self.recommendations.append((view.now, wanted))
        if wanted > replicas:
            wanted = min(wanted, max(2 * replicas, replicas + 4))
        else:
            wanted = min(replicas, max(r for _, r in self.recommendations))
        if wanted != replicas:
            self.reasons["hpa-up" if wanted > replicas else "hpa-down"] += 1
        return wanted


class Static:
    """A fixed number of pods, running from the start."""

    graceful = True

    def __init__(self, name: str, replicas: int) -> None:
        self.name, self.replicas = name, replicas
        self.reasons: Counter[str] = Counter()

    def start(self, config: Config) -> int:
        return self.replicas

    def tick(self, view: View) -> None:
        return None


Controller = Jobqueue | Keda | Static


def build(name: str, tasks: Sequence[TaskSpec], config: Config, knobs: Knobs) -> Controller:
    """The named policy, configured for this trace as the issue specifies."""
    k, top = config.concurrency, config.max_replicas
    mean_service = statistics.fmean(t.service_s for t in tasks)
    ours = Policy(
        min_replicas=0,
        max_replicas=top,
        concurrency=k,
        scale_down_stabilization_seconds=knobs.stabilization_s,
        idle_seconds_before_zero=knobs.idle_before_zero_s,
    )
    if name == "jobqueue-backlog":
        return Jobqueue(name, ours, knobs.operator_tick_s, knobs.operator_first_tick_s)
    if name == "jobqueue-latency":
        latency = replace(ours, target_wait_seconds=knobs.slo_wait_s)
        return Jobqueue(name, latency, knobs.operator_tick_s, knobs.operator_first_tick_s)
    if name == "keda-default":
        return Keda(name, list_length=5, polling_s=30, min_replicas=0, max_replicas=top, stabilization_s=300)
    if name == "keda-tuned":  # AWS's acceptable backlog per instance: k * latency / mean service time
        per_pod = max(1, math.floor(k * knobs.slo_wait_s / mean_service))
        return Keda(name, list_length=per_pod, polling_s=5, min_replicas=1, max_replicas=top, stabilization_s=60)
    if name == "static-peak":
        return Static(name, static_peak_replicas(tasks, config, knobs.slo_wait_s))
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(NAMES)}")


def static_peak_replicas(tasks: Sequence[TaskSpec], config: Config, slo_wait_s: float) -> int:
    """Erlang C sizing for the busiest minute of the trace at the 99th percentile wait."""
    arrivals = [t.arrival_s for t in tasks]
    peak, start = 0, 0
    for end, at in enumerate(arrivals):
        while arrivals[start] <= at - 60.0:
            start += 1
        peak = max(peak, end - start + 1)
    runs = [t.service_s for t in tasks]
    mean = statistics.fmean(runs)
    scv = statistics.pvariance(runs) / mean**2 if mean > 0 else 1.0
    limit = config.max_replicas * config.concurrency
    slots = slots_for_wait(peak / 60.0 * mean, mean, slo_wait_s, 0.99, scv, limit)
    return max(1, min(config.max_replicas, math.ceil(slots / config.concurrency)))


def _every(now: float, period: float) -> bool:
    return math.isclose(now % period, 0.0, abs_tol=1e-6)
