"""What any policy must pay on a trace: the yardsticks its worker-seconds are measured against.

- Pod bound: the integral of ceil(running(t) / concurrency) dt with every task started the moment it
  arrives (zero wait, free start-up, perfect packing). No policy can use fewer worker-seconds while
  starting every task at once; `cost ratio` = a policy's worker-seconds / pod bound. A policy that lets
  tasks wait (up to the target) can pack them tighter and go below it.
- Work bound: the total run time / concurrency: no policy at all can use less.
- Zero-wait start-up bound: the pod bound plus what starting pods costs with hindsight: each rise of the
  pod count pays a start-up, unless a pod kept idle since the last fall is cheaper (min(gap, start-up)
  per pod level). What starting every task at once costs with a clairvoyant scaler; backlog mode aims
  at zero wait, so this bounds it from below.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

from jobqueue_sim.trace import TaskSpec


def pod_bound(tasks: Sequence[TaskSpec], concurrency: int) -> float:
    """Worker-seconds of ceil(running / concurrency) pods with every task started on arrival."""
    return sum(math.ceil(running / concurrency) * span for span, running in _profile(tasks))


def work_bound(tasks: Sequence[TaskSpec], concurrency: int) -> float:
    return sum(t.service_s for t in tasks) / concurrency


def zero_wait_startup_bound(tasks: Sequence[TaskSpec], concurrency: int, startup_s: float) -> float:
    """The pod bound plus min(gap, start-up) for every rise of every pod level (the first rise: a start-up)."""
    total, extra, level, at = 0.0, 0.0, 0, 0.0
    fell_at: dict[int, float] = {}  # pod level -> when it last fell
    for span, running in _profile(tasks):
        pods = math.ceil(running / concurrency)
        for j in range(level + 1, pods + 1):
            extra += startup_s if j not in fell_at else min(at - fell_at[j], startup_s)
        for j in range(pods + 1, level + 1):
            fell_at[j] = at
        total += pods * span
        level, at = pods, at + span
    return total + extra


def _profile(tasks: Sequence[TaskSpec]) -> Iterator[tuple[float, int]]:
    """(duration, running tasks) pieces from the first arrival on, every task running from its arrival."""
    events = sorted([(t.arrival_s, 1) for t in tasks] + [(t.arrival_s + t.service_s, -1) for t in tasks])
    running, last = 0, events[0][0] if events else 0.0
    for at, change in events:
        if at > last:
            yield at - last, running
        running += change
        last = at


def pod_bound_at(tasks: Sequence[TaskSpec], concurrency: int, times: Sequence[float]) -> list[int]:
    """The pod bound's pods at each of the sorted `times` (for plots)."""
    events = sorted([(t.arrival_s, 1) for t in tasks] + [(t.arrival_s + t.service_s, -1) for t in tasks])
    pods, running, i = [], 0, 0
    for at in times:
        while i < len(events) and events[i][0] <= at:
            running += events[i][1]
            i += 1
        pods.append(math.ceil(running / concurrency))
    return pods
