"""PURE: arrival rate, run-time statistics and the oldest task's wait of one queue, from the counts and
counters broker.py reads each tick.

The broker gives instant counts (waiting, in flight) and counters that only grow (attempts finished, the
sum of their run times and of its squares, kept by the workers). Between two samples,
arrivals = change in (waiting + in flight) + completions, because every task that entered the queue is
either still there or finished. The windows, and why (docs/autoscaling.md has the measurements):

- Arrival rate: the lower of the last FAST_ARRIVAL_SECONDS and the last ARRIVAL_WINDOW_SECONDS. It falls
  as soon as a burst ends (a batch of 300 tasks is not a 5/s stream for the next minute); a rise shows up
  as waiting tasks first, which the autoscaler's drain rule answers at once.
- Run time: over the last SERVICE_WINDOW_SECONDS or the last MIN_COMPLETIONS completions, whichever covers
  more. After a burst, a time window slides past the many short runs first and keeps the few longest,
  which overstates the run time of the next burst several-fold; so the window keeps one older sample (the
  anchor) that still spans MIN_COMPLETIONS completions. A quiet queue keeps its run time that way too.
- Tasks that run long and have not finished yet are invisible to completed runs (a queue of 10 ms tasks
  whose slots all hold 5-minute tasks): where the samples carry the in-flight count, Little's law
  (busy slot-seconds / completions over the window) is the run time when it is more than
  LITTLE_FACTOR times the completed runs' mean.
- The oldest waiting task's wait, when producers do not stamp their tasks: the queue holds the last
  `waiting` arrivals (first in, first out), so the oldest arrived after the newest sample that had seen
  `waiting` fewer tasks enter than there are now. That bound errs by at most one tick, on the safe side;
  the sample after it gives the bound on the other side (`oldest_wait_at_least`), for what is shown.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

FAST_ARRIVAL_SECONDS: Final = 20.0
ARRIVAL_WINDOW_SECONDS: Final = 60.0
SERVICE_WINDOW_SECONDS: Final = 300.0
MIN_COMPLETIONS: Final = 500
LITTLE_FACTOR: Final = 2.0


@dataclass(frozen=True, slots=True)
class Sample:
    at: float
    """Monotonic seconds."""
    backlog: int
    """Waiting plus in-flight tasks."""
    completed: int
    run_seconds: float
    run_seconds_sq: float
    in_flight: int | None = None
    """Tasks delivered and not yet acked; None when the caller does not pass it (no Little's-law check)."""
    busy_seconds: float | None = None
    """In-flight tasks integrated over time since the window began (filled in by `add`)."""

    @property
    def entered(self) -> int:
        """Every task that ever entered the queue: still there, or finished."""
        return self.backlog + self.completed


@dataclass(frozen=True, slots=True)
class Window:
    """Samples of the last SERVICE_WINDOW_SECONDS, oldest first; start with `Window()`, keep what `add` returns."""

    samples: tuple[Sample, ...] = ()
    service: tuple[float, float] | None = None
    """The last known (mean run time, squared coefficient of variation)."""
    anchor: Sample | None = None
    """An older sample kept so that the run-time statistics span at least MIN_COMPLETIONS completions."""


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
        return Window((_integrated(None, sample),), window.service)
    sample = _integrated(previous, sample)
    start = sample.at - SERVICE_WINDOW_SECONDS
    samples = (*(s for s in window.samples if s.at >= start), sample)
    dropped = [s for s in window.samples if s.at < start]
    anchor = _anchor([*([window.anchor] if window.anchor else []), *dropped], sample)
    enough = sample.completed - samples[0].completed >= MIN_COMPLETIONS
    first = samples[0] if enough or anchor is None else anchor
    service = _service(first, sample)
    if service is not None:
        service = (_little(first, sample, service[0]), service[1])
    return Window(samples, service or window.service, anchor)


def _integrated(previous: Sample | None, sample: Sample) -> Sample:
    """`sample` with its busy slot-seconds: the previous ones plus the in-flight tasks since (trapezoid)."""
    if sample.in_flight is None:
        return replace(sample, busy_seconds=None)
    if previous is None:
        return replace(sample, busy_seconds=0.0)
    if previous.in_flight is None or previous.busy_seconds is None:
        return replace(sample, busy_seconds=None)
    busy = (previous.in_flight + sample.in_flight) / 2 * (sample.at - previous.at)
    return replace(sample, busy_seconds=previous.busy_seconds + busy)


def _anchor(candidates: list[Sample], last: Sample) -> Sample | None:
    """The newest candidate still MIN_COMPLETIONS completions before `last`, else the oldest (all there is)."""
    if not candidates:
        return None
    spanning = [s for s in candidates if last.completed - s.completed >= MIN_COMPLETIONS]
    return spanning[-1] if spanning else candidates[0]


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


def _little(first: Sample, last: Sample, mean: float) -> float:
    """Busy slot-seconds per completion from `first` to `last` when that is over LITTLE_FACTOR x `mean`
    (runs that have not finished yet), else `mean`."""
    if first.busy_seconds is None or last.busy_seconds is None:
        return mean
    little = (last.busy_seconds - first.busy_seconds) / max(last.completed - first.completed, 1)
    return little if little > LITTLE_FACTOR * mean else mean


def estimate(window: Window) -> Rates:
    """Arrival rate (the lower of the two windows) and the run-time statistics."""
    mean, scv = window.service if window.service is not None else (None, 1.0)
    if len(window.samples) < 2:
        return Rates(None, mean, scv)
    rate = min(_arrivals(window, FAST_ARRIVAL_SECONDS), _arrivals(window, ARRIVAL_WINDOW_SECONDS))
    return Rates(rate, mean, scv)


def _arrivals(window: Window, seconds: float) -> float:
    last = window.samples[-1]
    base = next(s for s in window.samples if s.at >= last.at - seconds)
    if base is last:
        base = window.samples[-2]
    return max(last.entered - base.entered, 0) / (last.at - base.at)


def oldest_wait(window: Window, waiting: int) -> float | None:
    """An upper bound on how long the oldest of `waiting` tasks has waited (None: nothing waits).

    Exact for one first-in-first-out list, up to one tick; with priorities a low-priority task can be older.
    Beyond the window it answers the window's span, i.e. "at least this long".
    """
    if waiting <= 0 or not window.samples:
        return None
    last = window.samples[-1]
    for sample in reversed(window.samples[:-1]):
        if last.entered - sample.entered >= waiting:
            return last.at - sample.at
    return last.at - window.samples[0].at


def oldest_wait_at_least(window: Window, waiting: int) -> float | None:
    """A lower bound on how long the oldest of `waiting` tasks has waited (None: nothing waits): it was
    already there at the sample after the one `oldest_wait` stops at. At most one tick under the truth for
    one first-in-first-out list; shorter with priorities, and at most the window's span."""
    if waiting <= 0 or not window.samples:
        return None
    last = newer = window.samples[-1]
    for sample in reversed(window.samples[:-1]):
        if last.entered - sample.entered >= waiting:
            return last.at - newer.at
        newer = sample
    return last.at - window.samples[0].at
