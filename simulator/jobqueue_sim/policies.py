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

from jobqueue_operator import rates, startup
from jobqueue_operator.autoscaling import History, Observation, Policy, decide, slots_for_wait
from jobqueue_sim.model import Config, View
from jobqueue_sim.trace import TaskSpec

NAMES = ("jobqueue-backlog", "jobqueue-latency", "keda-default", "keda-tuned", "static-peak")


@dataclass(frozen=True, slots=True)
class Knobs:
    """The benchmark's settings shared by every policy on one trace. Ours default to the CRD's defaults."""

    slo_wait_s: float = 30.0
    """The wait target: latency mode's targetWaitSeconds, and what "within target" is measured against."""
    stabilization_s: float = 0.0
    """Ours: scaleDownStabilizationSeconds (the CRD default)."""
    idle_before_zero_s: float | None = None
    """Ours: idleSecondsBeforeZero; None is the CRD default (unset: the automatic ski-rental rule)."""
    operator_tick_s: float = 5.0
    operator_first_tick_s: float = 0.0
    """Ours: when the first tick falls, i.e. the operator's timer phase against the trace (the replay on the
    cluster measures it; 0 is the worst case for a task arriving just after the start)."""
    stamped: bool = False
    """Ours: the producers stamp their tasks, so the broker tells the oldest task's wait; otherwise it is
    estimated from the counters (rates.oldest_wait), as for any Celery app."""
    planned_startup_s: float | None = None
    """Ours: a set startupSeconds; None learns the start-up from the pods, as the operator does."""


class Jobqueue:
    """The operator's autoscaler: every tick, measure as the operator's tick does (rates.py on the broker's
    counts and counters, the start-up learned from its own pods by startup.py), then call `decide`."""

    graceful = True

    def __init__(
        self,
        name: str,
        policy: Policy,
        tick_s: float,
        first_tick_s: float = 0.0,
        stamped: bool = False,
        fixed_startup: bool = False,
    ) -> None:
        """`fixed_startup`: plan with `policy.startup_seconds` (a set startupSeconds) instead of learning it."""
        self.name, self.policy, self.tick_s, self.stamped = name, policy, tick_s, stamped
        self.fixed_startup = fixed_startup
        self.history = History()
        self.window = rates.Window()
        self.learned = startup.Learned()
        self.next_tick = first_tick_s
        self.reasons: Counter[str] = Counter()

    def start(self, config: Config) -> int:
        return self.policy.min_replicas

    def tick(self, view: View) -> int | None:
        if view.now < self.next_tick:
            return None
        self.next_tick = view.now + self.tick_s
        sample = rates.Sample(
            view.now, view.ready + view.in_flight, view.completed, view.run_seconds, view.run_seconds_sq, view.in_flight
        )
        self.window = rates.add(self.window, sample)
        seen = rates.estimate(self.window)
        self.learned = startup.learn(self.learned, (startup.PodStart(str(i), s) for i, s in view.pod_starts))
        learned = None if self.fixed_startup else startup.estimate(self.learned)
        policy = self.policy if learned is None else replace(self.policy, startup_seconds=learned)
        oldest = view.oldest_wait if self.stamped else rates.oldest_wait(self.window, view.ready)
        observation = Observation(
            view.ready,
            view.in_flight,
            view.replicas,
            seen.arrival_rate,
            seen.mean_service_seconds,
            seen.service_scv,
            oldest_wait_seconds=oldest,
            ready_replicas=view.ready_replicas,
        )
        decision = decide(observation, policy, self.history, view.now)
        self.history = decision.history
        if decision.direction != "none":
            self.reasons[decision.reason] += 1
        return decision.replicas


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
    ours = Policy(
        min_replicas=0,
        max_replicas=top,
        concurrency=k,
        scale_down_stabilization_seconds=knobs.stabilization_s,
        idle_seconds_before_zero=knobs.idle_before_zero_s,
        tick_seconds=knobs.operator_tick_s,
    )
    if knobs.planned_startup_s is not None:
        ours = replace(ours, startup_seconds=knobs.planned_startup_s)
    fixed = knobs.planned_startup_s is not None
    if name == "jobqueue-backlog":
        return Jobqueue(name, ours, knobs.operator_tick_s, knobs.operator_first_tick_s, knobs.stamped, fixed)
    if name == "jobqueue-latency":
        latency = replace(ours, target_wait_seconds=knobs.slo_wait_s)
        return Jobqueue(name, latency, knobs.operator_tick_s, knobs.operator_first_tick_s, knobs.stamped, fixed)
    if name == "keda-default":
        return Keda(name, list_length=5, polling_s=30, min_replicas=0, max_replicas=top, stabilization_s=300)
    if name == "keda-tuned":
        return Keda(name, keda_tuned_list_length(tasks, config, knobs), 5, 1, top, stabilization_s=60)
    if name == "static-peak":
        return Static(name, static_peak_replicas(tasks, config, knobs.slo_wait_s))
    raise ValueError(f"unknown policy {name!r}; choose from {', '.join(NAMES)}")


def keda_tuned_list_length(tasks: Sequence[TaskSpec], config: Config, knobs: Knobs) -> int:
    """AWS's acceptable backlog per instance: concurrency x wait target / mean run time of the trace."""
    return max(1, math.floor(config.concurrency * knobs.slo_wait_s / statistics.fmean(t.service_s for t in tasks)))


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
