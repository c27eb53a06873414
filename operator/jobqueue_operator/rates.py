"""PURE: arrival rate and run-time statistics of one queue from the counters broker.py reads each tick.

The broker gives instant counts (waiting + in flight) and counters that only grow (attempts finished, the
sum of their run times and of its squares, kept by the workers). Between two samples,
arrivals = change in (waiting + in flight) + completions, because every task that entered the queue is
either still there or finished. The windows are the simulator's (docs/autoscaling.md): arrivals over the
last 60 s, run times over the last 300 s; the last known run time is kept through idle periods, so a
queue that wakes up is sized with it at once.
"""

from __future__ import annotations

from dataclasses import dataclass

ARRIVAL_WINDOW_SECONDS = 60.0
SERVICE_WINDOW_SECONDS = 300.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """Monotonic seconds."""
    backlog: int
    """Waiting plus in-flight tasks."""
    completed: int
    run_seconds: float
    run_seconds_sq: float


@dataclass(frozen=True, slots=True)
class Window:
    """Samples of the last SERVICE_WINDOW_SECONDS, oldest first; start with `Window()`, keep what `add` returns."""

    samples: tuple[Sample, ...] = ()
    service: tuple[float, float] | None = None
    """The last known (mean run time, squared coefficient of variation)."""


@dataclass(frozen=True, slots=True)
class Rates:
    arrival_rate: float | None
    """Tasks per second entering the queue; None until two samples exist."""
    mean_service_seconds: float | None
    service_scv: float = 1.0


def add(window: Window, sample: Sample) -> Window:
    """The window with `sample` appended; a counter that went backwards (Redis restarted) starts it over."""
    previous = window.samples[-1] if window.samples else None
    if previous is not None and (sample.completed < previous.completed or sample.at <= previous.at):
        return Window((sample,), window.service)
    start = sample.at - SERVICE_WINDOW_SECONDS
    samples = (*(s for s in window.samples if s.at >= start), sample)
    return Window(samples, _service(samples[0], sample) or window.service)


def _service(first: Sample, last: Sample) -> tuple[float, float] | None:
    done = last.completed - first.completed
    if done <= 0:
        return None
    mean = (last.run_seconds - first.run_seconds) / done
    if mean <= 0:
        return None
    if done == 1:
        return mean, 1.0
    variance = max((last.run_seconds_sq - first.run_seconds_sq) / done - mean * mean, 0.0)
    return mean, variance / (mean * mean)


def estimate(window: Window) -> Rates:
    """Arrival rate over the last ARRIVAL_WINDOW_SECONDS and the run-time statistics."""
    mean, scv = window.service if window.service is not None else (None, 1.0)
    if len(window.samples) < 2:
        return Rates(None, mean, scv)
    last = window.samples[-1]
    base = next(s for s in window.samples if s.at >= last.at - ARRIVAL_WINDOW_SECONDS)
    if base is last:
        base = window.samples[-2]
    arrivals = (last.backlog - base.backlog) + (last.completed - base.completed)
    return Rates(max(arrivals, 0) / (last.at - base.at), mean, scv)
