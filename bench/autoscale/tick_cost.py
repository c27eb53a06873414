"""What one operator tick costs: `decide` for 1,000 queues with varied load; 70 ticks of 5 s fill the
300 s stabilization windows, so the later ticks carry full histories."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

from jobqueue_operator.autoscaling import History, Observation, Policy, decide


def measure(queues: int, ticks: int = 70) -> dict[str, Any]:
    rng = random.Random(7)
    waits = (None, 10.0, 60.0)  # a mix of backlog and latency mode
    policies = [
        Policy(
            max_replicas=50, concurrency=4, target_wait_seconds=rng.choice(waits), scale_down_stabilization_seconds=300
        )
        for _ in range(queues)
    ]
    histories = [History() for _ in range(queues)]
    replicas = [rng.randint(0, 20) for _ in range(queues)]
    samples = []
    for tick in range(ticks):
        now = tick * 5.0
        observations = [
            Observation(rng.randint(0, 200), rng.randint(0, 40), replicas[i], rng.uniform(0, 20), rng.uniform(0.05, 30))
            for i in range(queues)
        ]
        started = time.perf_counter()
        for i, (obs, policy) in enumerate(zip(observations, policies, strict=True)):
            decision = decide(obs, policy, histories[i], now)
            histories[i], replicas[i] = decision.history, decision.replicas
        samples.append((time.perf_counter() - started) * 1000)
    return {
        "queues": queues,
        "ticks": ticks,
        "ms_per_tick_median": round(statistics.median(samples), 2),
        "ms_per_tick_max": round(max(samples), 2),
    }


if __name__ == "__main__":
    print(measure(1000))
