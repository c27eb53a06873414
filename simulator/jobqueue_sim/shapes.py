"""Trace shapes: seeded generators of arrival times and run times (`python -m bench.autoscale.traces`
writes them to bench/traces/).

Arrivals are Poisson with a rate that changes over time (thinning), or batches that arrive at one instant;
run times are drawn per task. Each trace stays under several thousand rows so the suite runs in a minute.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

from jobqueue_sim.trace import TaskSpec

SEED = 20240601

Rate = Callable[[float], float]
Service = Callable[[random.Random], float]


def poisson(rng: random.Random, rate: Rate, peak: float, duration: float, service: Service) -> list[TaskSpec]:
    """Arrivals of a Poisson process with rate(t) <= peak over [0, duration), by thinning."""
    tasks: list[TaskSpec] = []
    t = 0.0
    while True:
        t += rng.expovariate(peak)
        if t >= duration:
            return tasks
        if rng.random() * peak < rate(t):
            tasks.append(TaskSpec(round(t, 3), round(service(rng), 3)))


def exponential(mean: float) -> Service:
    return lambda rng: rng.expovariate(1.0 / mean)


def lognormal(mean: float, cv: float) -> Service:
    sigma = math.sqrt(math.log(1.0 + cv * cv))
    mu = math.log(mean) - sigma * sigma / 2.0
    return lambda rng: rng.lognormvariate(mu, sigma)


def step(rng: random.Random) -> list[TaskSpec]:
    """10x jump in arrivals for 10 minutes, then back: reaction and recovery."""
    return poisson(rng, lambda t: 2.0 if 600 <= t < 1200 else 0.2, 2.0, 2400, exponential(8.0))


def ramp(rng: random.Random) -> list[TaskSpec]:
    """Linear 0 -> 2 tasks/s over 30 minutes, 5 minutes at the peak."""
    return poisson(rng, lambda t: min(t / 1800.0, 1.0) * 2.0, 2.0, 2100, exponential(8.0))


def diurnal(rng: random.Random) -> list[TaskSpec]:
    """A day compressed into 2 hours: sinusoidal rate between 0.05 and 0.6 tasks/s."""
    rate: Rate = lambda t: 0.325 - 0.275 * math.cos(2 * math.pi * t / 7200.0)  # noqa: E731
    return poisson(rng, rate, 0.6, 7200, exponential(15.0))


def bursty(rng: random.Random) -> list[TaskSpec]:
    """60 s bursts at 2 tasks/s every 5-15 minutes, nothing in between: room to scale to zero."""
    tasks: list[TaskSpec] = []
    start = 60.0
    while start < 7200:
        burst = poisson(rng, lambda t: 2.0, 2.0, 60.0, exponential(5.0))
        tasks += [TaskSpec(round(start + b.arrival_s, 3), b.service_s) for b in burst]
        start += 60.0 + rng.uniform(300.0, 900.0)
    return tasks


def heavy_tail(rng: random.Random) -> list[TaskSpec]:
    """Log-normal run times with coefficient of variation 3 (mean 5 s), steady 1 task/s."""
    return poisson(rng, lambda t: 1.0, 1.0, 2400, lognormal(5.0, 3.0))


def mixed(rng: random.Random) -> list[TaskSpec]:
    """90 % 50 ms tasks and 10 % 30 s tasks at 1.5 tasks/s: head-of-line blocking."""
    return poisson(rng, lambda t: 1.5, 1.5, 1800, lambda r: 30.0 if r.random() < 0.1 else 0.05)


def priorities(rng: random.Random) -> list[TaskSpec]:
    """The step trace with half the tasks sent at Celery priorities 3 and 9 (other Redis lists)."""
    return [TaskSpec(t.arrival_s, t.service_s, rng.choice((0, 0, 3, 9))) for t in step(rng)]


def batches(rng: random.Random) -> list[TaskSpec]:
    """Batches of 50-400 tasks that arrive at one instant every 8-20 minutes, nothing in between; run
    times log-normal, mean 4 s, CV 1.5: a nightly export fanned out, a mailing."""
    return _batches(rng, lambda r: lognormal(4.0, 1.5))


def batch_kinds(rng: random.Random) -> list[TaskSpec]:
    """Batches as in `batches`, but each batch its own kind of task (mean run time 1, 3 or 8 s): the run
    time learned from the last batch is wrong for the next one."""
    return _batches(rng, lambda r: lognormal(r.choice((1.0, 3.0, 8.0)), 1.0))


def _batches(rng: random.Random, kind: Callable[[random.Random], Service]) -> list[TaskSpec]:
    tasks: list[TaskSpec] = []
    start = 30.0
    while start < 7200:
        size, service = rng.randint(50, 400), kind(rng)
        tasks += [TaskSpec(round(start, 3), round(service(rng), 3)) for _ in range(size)]
        start += rng.uniform(480.0, 1200.0)
    return tasks


def rare_long(rng: random.Random) -> list[TaskSpec]:
    """A trickle of 1 s tasks (one a minute) and, every 10 minutes on average, a 5-20 minute task."""
    short = poisson(rng, lambda t: 1 / 60, 1 / 60, 7200, exponential(1.0))
    long = poisson(rng, lambda t: 1 / 600, 1 / 600, 7200, lambda r: r.uniform(300.0, 1200.0))
    return sorted(short + long, key=lambda t: t.arrival_s)


def short_long(rng: random.Random) -> list[TaskSpec]:
    """98 % 10 ms tasks and 2 % 4-6 minute tasks at 3 tasks/s: the long ones hold slots for minutes
    before the first of them finishes, so the run time seen at first is the short ones'."""
    return poisson(rng, lambda t: 3.0, 3.0, 1800, lambda r: r.uniform(240.0, 360.0) if r.random() < 0.02 else 0.01)


def drift(rng: random.Random) -> list[TaskSpec]:
    """A load that wanders: every minute the rate takes a random step (x e^N(0, 0.25)) between 0.05 and
    1.5 tasks/s, over 2 hours; run times exponential, mean 4 s."""
    rates = [0.5]
    for _ in range(7200 // 60):
        rates.append(min(1.5, max(0.05, rates[-1] * math.exp(rng.gauss(0.0, 0.25)))))
    return poisson(rng, lambda t: rates[int(t // 60)], 1.5, 7200, exponential(4.0))


def trickle(rng: random.Random) -> list[TaskSpec]:
    """One task every 3 minutes on average (run time exponential, mean 20 s): to zero between tasks, or not."""
    return poisson(rng, lambda t: 1 / 180, 1 / 180, 7200, exponential(20.0))


def spike(rng: random.Random) -> list[TaskSpec]:
    """Steady 0.5 tasks/s, five minutes at 10 tasks/s, back to 0.5; run times exponential, mean 3 s."""
    return poisson(rng, lambda t: 10.0 if 1200 <= t < 1500 else 0.5, 10.0, 3000, exponential(3.0))


GENERATORS: dict[str, Callable[[random.Random], list[TaskSpec]]] = {
    "step": step,
    "ramp": ramp,
    "diurnal": diurnal,
    "bursty": bursty,
    "heavy_tail": heavy_tail,
    "mixed": mixed,
    "priorities": priorities,
    "batches": batches,
    "batch_kinds": batch_kinds,
    "rare_long": rare_long,
    "short_long": short_long,
    "drift": drift,
    "trickle": trickle,
    "spike": spike,
}
FIRST_SEVEN = ("step", "ramp", "diurnal", "bursty", "heavy_tail", "mixed", "priorities")
"""The traces the suite shipped before the rest were added: the ones the cost goal was first set on."""


def generate(name: str, seed: str = "") -> list[TaskSpec]:
    """The named trace; `seed` appended to the shipped seed gives another draw of the same shape."""
    return GENERATORS[name](random.Random(f"{SEED}-{name}{seed}"))
