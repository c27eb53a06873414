"""The shipped traces, regenerated exactly by `python -m bench.autoscale.traces` (seeded).

Arrivals are Poisson with a rate that changes over time (thinning); run times are drawn per task.
Each trace stays under a few thousand rows so the whole suite simulates in seconds.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from pathlib import Path

from bench.autoscale.trace import TaskSpec, save

TRACES_DIR = Path(__file__).resolve().parent.parent / "traces"
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


GENERATORS: dict[str, Callable[[random.Random], list[TaskSpec]]] = {
    "step": step,
    "ramp": ramp,
    "diurnal": diurnal,
    "bursty": bursty,
    "heavy_tail": heavy_tail,
    "mixed": mixed,
    "priorities": priorities,
}


def main() -> None:
    TRACES_DIR.mkdir(exist_ok=True)
    for name, generate in GENERATORS.items():
        tasks = generate(random.Random(f"{SEED}-{name}"))
        save(TRACES_DIR / f"{name}.csv", tasks)
        print(f"{name}.csv: {len(tasks)} tasks over {tasks[-1].arrival_s / 60:.0f} min")


if __name__ == "__main__":
    main()
