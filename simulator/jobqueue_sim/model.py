"""The discrete-event model of one Celery queue on Kubernetes.

What it models, and why each matters to the comparison:
- Tasks wait in Celery's Redis lists: one per priority step (0, 3, 6, 9; lower first), FIFO within one.
  A baseline that reads LLEN of the plain list sees only step 0.
- Pods start `startup_s` after they are created (schedule, pull, boot) and cost worker-seconds from
  creation until they exit. Each has `concurrency` slots and prefetch 1: a pod takes a task only into
  a free slot, so nothing waits hidden in a pod while another pod idles.
- Free slots are served in the order they became free, as Redis serves blocked BRPOP clients, so
  work spreads over pods instead of packing into the oldest.
- Scale-down. Graceful (ours): idle pods go first (pod-deletion-cost), a busy victim stops taking
  tasks and exits when its running tasks finish (grace period covers the task time limit). Blind (the
  HPA and KEDA): the ReplicaSet picks not-ready pods, then the newest, whatever they run; a victim
  gets `grace_s` (Kubernetes' default 30 s) of warm shutdown, then is killed: its running tasks are
  interrupted and, with acks_late and reject_on_worker_lost, redelivered after `redelivery_delay_s`.
- A task's queue wait is from its arrival to the start of the run that completes it, so work lost to
  an interruption counts against the policy that caused it.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Protocol

from jobqueue_sim.trace import TaskSpec

PRIORITY_STEPS = (0, 3, 6, 9)


@dataclass(slots=True)
class Task:
    id: int
    arrival: float
    service: float
    step: int
    start: float | None = None
    done: float | None = None
    attempt: int = 0
    interruptions: int = 0


@dataclass(slots=True)
class Pod:
    id: int
    created: float
    ready_at: float
    running: dict[int, Task] = field(default_factory=dict)
    ready: bool = False
    terminating: bool = False
    gone_at: float | None = None


@dataclass(frozen=True, slots=True)
class Config:
    concurrency: int = 4
    max_replicas: int = 50
    startup_s: float = 10.0
    grace_s: float = 30.0
    """Baselines' terminationGracePeriodSeconds (Kubernetes' default)."""
    redelivery_delay_s: float = 0.0
    """Interrupted task back in the queue after this (0: soft shutdown re-queues at once)."""
    tick_s: float = 1.0
    """How often controllers are asked; each acts on its own period, a multiple of this."""
    sample_s: float = 5.0


@dataclass(frozen=True, slots=True)
class View:
    """What a controller may look at on a tick."""

    now: float
    ready: int
    ready_by_step: dict[int, int]
    in_flight: int
    replicas: int
    arrived: int
    completed: int = 0
    """Tasks finished so far, and the sum of their run times and of its squares: the workers' counters."""
    run_seconds: float = 0.0
    run_seconds_sq: float = 0.0
    ready_replicas: int = 0
    """Pods that have started and take tasks."""
    oldest_wait: float | None = None
    """How long the oldest waiting task has waited (None: none waits): what a stamping producer tells."""
    pod_starts: tuple[tuple[int, float], ...] = ()
    """(pod id, creation to ready in seconds) of the pods alive and ready: what the Pods' status tells."""


class Controller(Protocol):
    name: str
    graceful: bool

    def start(self, config: Config) -> int:
        """Replicas at time 0 (already running: static sizing gets no start-up delay)."""
        ...

    def tick(self, view: View) -> int | None:
        """New replicas, or None to leave them."""
        ...


@dataclass
class Result:
    tasks: list[Task]
    pods: list[Pod]
    horizon: float
    scale_events: int
    samples: list[tuple[float, int, int, int]]
    """(time, waiting, in flight, pods alive)."""
    busy_slot_seconds: float
    below_in_flight: int = 0
    """Scale-downs to fewer pods than the running tasks occupy (ceil(running / concurrency)): what our
    autoscaler never does; the victims finish within the grace period, or their tasks are interrupted."""

    @property
    def interrupted(self) -> int:
        return sum(t.interruptions for t in self.tasks)

    def worker_seconds(self) -> float:
        return sum(min(self.horizon, p.gone_at or self.horizon) - p.created for p in self.pods)


class Simulation:
    """One trace under one controller; `run()` once."""

    def __init__(self, specs: Iterable[TaskSpec], controller: Controller, config: Config) -> None:
        self.config = config
        self.controller = controller
        self.tasks = [Task(i, s.arrival_s, s.service_s, _step(s.priority)) for i, s in enumerate(specs)]
        self.queues: dict[int, deque[Task]] = {s: deque() for s in PRIORITY_STEPS}
        self.pods: list[Pod] = []
        self.free: deque[Pod] = deque()  # one entry per free slot, oldest first; stale entries skipped
        self.events: list[tuple[float, int, str, object]] = []
        self.seq = itertools.count()
        self.replicas = 0
        self.scale_events = 0
        self.arrived = 0
        self.completed = 0
        self.run_seconds = 0.0
        self.run_seconds_sq = 0.0
        self.busy_slot_seconds = 0.0
        self.below_in_flight = 0
        self.samples: list[tuple[float, int, int, int]] = []

    def run(self) -> Result:
        for task in self.tasks:
            self._at(task.arrival, "arrive", task)
        initial = self.controller.start(self.config)
        self._scale(0.0, initial, warm=True)
        end_of_trace = math.ceil(max((t.arrival for t in self.tasks), default=0.0))
        limit = end_of_trace + 3600.0  # what has not run an hour after the trace ended is lost
        self._at(0.0, "tick", None)
        self._at(0.0, "sample", None)
        now = 0.0
        while self.events:
            now, _, kind, obj = heapq.heappop(self.events)
            if now > limit:
                now = limit
                break
            if kind in ("tick", "sample") and self.completed == len(self.tasks) and now >= end_of_trace:
                break
            getattr(self, f"_on_{kind}")(now, obj)
            self._dispatch(now)
        horizon = max([float(end_of_trace)] + [t.done for t in self.tasks if t.done is not None])
        if self.completed < len(self.tasks):
            horizon = now
        return Result(
            self.tasks,
            self.pods,
            horizon,
            self.scale_events,
            self.samples,
            self.busy_slot_seconds,
            self.below_in_flight,
        )

    # events ---------------------------------------------------------------------------------------
    def _at(self, time: float, kind: str, obj: object) -> None:
        heapq.heappush(self.events, (time, next(self.seq), kind, obj))

    def _on_arrive(self, now: float, task: object) -> None:
        assert isinstance(task, Task)
        self.queues[task.step].append(task)
        self.arrived += 1

    def _on_requeue(self, now: float, task: object) -> None:
        assert isinstance(task, Task)
        self.queues[task.step].appendleft(task)

    def _on_ready(self, now: float, pod: object) -> None:
        assert isinstance(pod, Pod)
        if pod.terminating:
            return
        pod.ready = True
        self.free.extend([pod] * self.config.concurrency)

    def _on_finish(self, now: float, payload: object) -> None:
        assert isinstance(payload, tuple)
        pod: Pod
        task: Task
        attempt: int
        pod, task, attempt = payload
        if task.attempt != attempt or task.id not in pod.running:
            return  # the run was interrupted
        del pod.running[task.id]
        task.done = now
        self.completed += 1
        self.run_seconds += task.service
        self.run_seconds_sq += task.service * task.service
        self.busy_slot_seconds += task.service
        if pod.terminating:
            if not pod.running:
                pod.gone_at = now
        else:
            self.free.append(pod)

    def _on_kill(self, now: float, pod: object) -> None:
        assert isinstance(pod, Pod)
        if pod.gone_at is not None:
            return
        for task in pod.running.values():
            self.busy_slot_seconds += now - (task.start or now)
            task.interruptions += 1
            task.attempt += 1
            task.start = None
            self._at(now + self.config.redelivery_delay_s, "requeue", task)
        pod.running.clear()
        pod.gone_at = now

    def _on_tick(self, now: float, _: object) -> None:
        live = [p for p in self.pods if p.gone_at is None]
        view = View(
            now=now,
            ready=sum(len(q) for q in self.queues.values()),
            ready_by_step={s: len(q) for s, q in self.queues.items()},
            in_flight=sum(len(p.running) for p in live),
            replicas=self.replicas,
            arrived=self.arrived,
            completed=self.completed,
            run_seconds=self.run_seconds,
            run_seconds_sq=self.run_seconds_sq,
            ready_replicas=sum(1 for p in live if p.ready and not p.terminating),
            oldest_wait=max((now - q[0].arrival for q in self.queues.values() if q), default=None),
            pod_starts=tuple((p.id, p.ready_at - p.created) for p in live if p.ready),
        )
        wanted = self.controller.tick(view)
        if wanted is not None and wanted != self.replicas:
            self._scale(now, min(max(wanted, 0), self.config.max_replicas), warm=False)
        self._at(now + self.config.tick_s, "tick", None)

    def _on_sample(self, now: float, _: object) -> None:
        live = [p for p in self.pods if p.gone_at is None]
        waiting = sum(len(q) for q in self.queues.values())
        self.samples.append((now, waiting, sum(len(p.running) for p in live), len(live)))
        self._at(now + self.config.sample_s, "sample", None)

    # scaling and dispatch ---------------------------------------------------------------------------
    def _scale(self, now: float, wanted: int, warm: bool) -> None:
        if wanted == self.replicas:
            return
        if not warm:
            self.scale_events += 1
        if wanted > self.replicas:
            for _ in range(wanted - self.replicas):
                ready_at = now if warm else now + self.config.startup_s
                pod = Pod(len(self.pods), now, ready_at)
                self.pods.append(pod)
                self._at(ready_at, "ready", pod)
        else:
            running = sum(len(p.running) for p in self.pods if p.gone_at is None and not p.terminating)
            if wanted < math.ceil(running / self.config.concurrency):
                self.below_in_flight += 1
            for pod in self._victims(self.replicas - wanted):
                self._terminate(now, pod)
        self.replicas = wanted

    def _victims(self, count: int) -> list[Pod]:
        serving = [p for p in self.pods if not p.terminating and p.gone_at is None]
        if self.controller.graceful:  # pod-deletion-cost: not ready, then idle, then least busy
            serving.sort(key=lambda p: (p.ready, len(p.running), -p.id))
        else:  # the ReplicaSet's own order: not ready, then the newest
            serving.sort(key=lambda p: (p.ready, -p.id))
        return serving[:count]

    def _terminate(self, now: float, pod: Pod) -> None:
        pod.terminating = True
        if not pod.running:
            pod.gone_at = now
        elif not self.controller.graceful:
            self._at(now + self.config.grace_s, "kill", pod)

    def _dispatch(self, now: float) -> None:
        while self.free:
            pod = self.free[0]
            if pod.terminating or pod.gone_at is not None:
                self.free.popleft()
                continue
            task = self._next_task()
            if task is None:
                return
            self.free.popleft()
            task.start = now
            pod.running[task.id] = task
            self._at(now + task.service, "finish", (pod, task, task.attempt))

    def _next_task(self) -> Task | None:
        for step in PRIORITY_STEPS:
            if self.queues[step]:
                return self.queues[step].popleft()
        return None


def _step(priority: int) -> int:
    """The Redis list a priority lands in: the nearest of Celery's default priority steps."""
    return min(PRIORITY_STEPS, key=lambda s: (abs(s - priority), s))
