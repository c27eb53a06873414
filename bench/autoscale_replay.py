"""Replay a short bursty trace through a real JobQueue on the local cluster and set it beside the simulator.

    python -m bench.autoscale_replay [--latency] [--trace FILE] [--json OUT] [--write-trace]

Needs KUBECONFIG pointing at a `jobqueue_devenv up` cluster. Installs the chart, runs the operator (as the
e2e tests do), applies a JobQueue with one autoscaled queue of `jobqueue_worker.demo:app` on a managed Redis,
sends built-in `sleep` tasks at the trace's arrival times with its run times, and measures:

- worker-seconds: worker Pods alive (seen by polling the Pods every 0.5 s), integrated over time, over
  the simulator's horizon (first arrival to last completion) and until the queue is back at zero workers;
- queue waits: send time to start (the result's `date_done` minus the task's run time);
- start-up delay: at each wake from zero, first worker Pod seen to the first task started after it.

Then it simulates the same trace with the same policy (`jobqueue-backlog`; with `--latency`,
`jobqueue-latency` at targetWaitSeconds 20 and startupSeconds 5 on both sides) at the same concurrency,
maxReplicas, windows, operator tick and the measured start-up delay, and prints both side by side.
`--write-trace` regenerates the trace (seeded).
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import random
import statistics
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from celery import Celery
from kubernetes import client, config

from jobqueue_devenv import bench_results, demo
from jobqueue_devenv.deployer import Deployer, namespace_for
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_sim import policies, report, trace
from jobqueue_sim.model import Config, Simulation
from jobqueue_sim.shapes import exponential, poisson
from jobqueue_worker import producer

REPO = Path(__file__).resolve().parent.parent
TRACE = REPO / "bench" / "traces" / "replay" / "short.csv"  # a folder of its own: not one of the suite's traces
RESULT = REPO / "bench" / "results" / "autoscale_replay.json"
RESULT_LATENCY = REPO / "bench" / "results" / "autoscale_replay_latency.json"
LATENCY_TARGET_S = 20.0
"""`--latency`: targetWaitSeconds for the replay (a new pod serves within half of it, as in the suite)."""
QUEUE = "work"


@dataclass(frozen=True)
class Settings:
    """One value per knob, used for the JobQueue and for the simulation alike."""

    concurrency: int = 2
    max_replicas: int = 4
    stabilization_s: float = 10.0
    idle_before_zero_s: float = 10.0
    operator_tick_s: float = 5.0  # the operator's default --autoscale-seconds
    sample_s: float = 0.5
    target_wait_s: float | None = None
    """Latency mode (targetWaitSeconds) when set; backlog mode otherwise."""
    planned_startup_s: float = 5.0
    """Latency mode: the JobQueue's startupSeconds, the start-up the autoscaler plans with on both sides."""

    @property
    def policy(self) -> str:
        return "jobqueue-backlog" if self.target_wait_s is None else "jobqueue-latency"


def short_trace(seed: int = 20240601) -> list[trace.TaskSpec]:
    """Two bursts with an idle gap long enough to go back to zero in between: 0-25 s at 1.2/s and
    70-100 s at 1.6/s, exponential run times of mean 2 s (0.2-8 s)."""
    rng = random.Random(seed)

    def rate(t: float) -> float:
        return 1.2 if t < 25 else 1.6 if 70 <= t < 100 else 0.0

    service = exponential(2.0)
    tasks = poisson(rng, rate, 1.6, 100, lambda r: min(8.0, max(0.2, service(r))))
    return [trace.TaskSpec(t.arrival_s, round(t.service_s, 3)) for t in tasks]


def manifest(name: str, settings: Settings) -> dict[str, Any]:
    autoscaling = {
        "minReplicas": 0,
        "maxReplicas": settings.max_replicas,
        "scaleDownStabilizationSeconds": int(settings.stabilization_s),
        "idleSecondsBeforeZero": int(settings.idle_before_zero_s),
    }
    if settings.target_wait_s is not None:
        autoscaling["targetWaitSeconds"] = int(settings.target_wait_s)
        autoscaling["startupSeconds"] = int(settings.planned_startup_s)
    queue = {"name": QUEUE, "concurrency": settings.concurrency, "timeLimitSeconds": 60, "autoscaling": autoscaling}
    return {
        "apiVersion": demo.GROUP_VERSION,
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {"image": "jobqueue-worker:dev", "app": "jobqueue_worker.demo:app", "queues": [queue]},
    }


@dataclass
class Sample:
    at: float
    pods: int
    ready: int
    replicas: int


class PodSampler:
    """Polls one queue's worker Pods and Deployment every `every` seconds in a thread."""

    def __init__(self, kubeconfig: str, namespace: str, jobqueue: str, every: float) -> None:
        api = config.new_client_from_config(config_file=kubeconfig)
        self.core, self.apps = client.CoreV1Api(api), client.AppsV1Api(api)
        self.namespace, self.every = namespace, every
        self.deployment = f"{jobqueue}-{QUEUE}-worker"
        self.selector = f"jobqueue.dev/jobqueue={jobqueue},jobqueue.dev/queue={QUEUE},{naming.COMPONENT_LABEL}=worker"
        self.samples: list[Sample] = []
        self.first_seen: dict[str, float] = {}
        self.first_ready: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def latest(self) -> Sample:
        return self.samples[-1]

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(self.every)

    def _sample(self) -> None:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector).items
        deployment = self.apps.read_namespaced_deployment(self.deployment, self.namespace)
        now = time.time()
        ready = 0
        for pod in pods:
            self.first_seen.setdefault(pod.metadata.uid, now)
            conditions = pod.status.conditions or []
            if any(c.type == "Ready" and c.status == "True" for c in conditions):
                ready += 1
                self.first_ready.setdefault(pod.metadata.uid, now)
        self.samples.append(Sample(now, len(pods), ready, int(deployment.spec.replicas or 0)))


@dataclass
class Measured:
    """Per task (in trace order) its send, start and finish times; the Pod samples; all epoch seconds."""

    t0: float
    sent: list[float]
    started: list[float]
    done: list[float]
    samples: list[Sample]
    first_seen: dict[str, float]
    first_ready: dict[str, float]


def replay(
    app: Celery, kube: demo.Kube, namespace: str, jobqueue: str, tasks: Sequence[trace.TaskSpec], run_id: str
) -> Measured:
    """Send the trace in real time, wait for every task and for zero workers; returns what was seen."""
    sampler = PodSampler(kube.kubeconfig, namespace, jobqueue, Settings.sample_s)
    sampler.start()
    try:
        wait_until(lambda: sampler.samples, timeout=10, what="a first Pod sample")
        t0 = time.time()
        sent: list[tuple[Any, float, float]] = []
        for task in tasks:
            time.sleep(max(0.0, t0 + task.arrival_s - time.time()))
            at = time.time()
            (result,) = producer.send(app, QUEUE, "sleep", 1, run_id=run_id, kwargs={"seconds": task.service_s})
            sent.append((result, at, task.service_s))
        wait_until(
            lambda: producer.done_count(app, run_id) == len(tasks),
            timeout=180,
            what=f"{len(tasks)} tasks done (so far {producer.done_count(app, run_id)})",
            interval=0.5,
        )
        wait_until(
            lambda: (s := sampler.latest()).pods == 0 and s.replicas == 0, timeout=120, what="back to zero workers"
        )
    finally:
        sampler.stop()
    done = [_done_at(result) for result, _, _ in sent]
    started = [finished - service for finished, (_, _, service) in zip(done, sent, strict=True)]
    sent_at = [at for _, at, _ in sent]
    return Measured(t0, sent_at, started, done, sampler.samples, sampler.first_seen, sampler.first_ready)


def _done_at(result: Any) -> float:
    """When the worker stored the task's result (epoch seconds)."""
    finished = result.date_done
    if isinstance(finished, str):
        finished = datetime.fromisoformat(finished)
    assert isinstance(finished, datetime), finished
    return (finished if finished.tzinfo else finished.replace(tzinfo=UTC)).timestamp()


def pod_seconds(samples: Sequence[Sample], end: float, ready: bool = False) -> float:
    """Pods (or ready Pods) integrated over time, each sample's count held until the next, up to `end`."""
    total = 0.0
    for here, after in itertools.pairwise(samples):
        if here.at >= end:
            break
        total += (here.ready if ready else here.pods) * (min(after.at, end) - here.at)
    return total


def wakes(samples: Sequence[Sample]) -> list[float]:
    """The times a worker Pod appeared after none."""
    return [after.at for here, after in itertools.pairwise(samples) if here.pods == 0 < after.pods]


def first_tick(measured: Measured, tick_s: float) -> float:
    """The operator's timer phase against the trace: when, modulo the tick, it first changed the replicas
    after the first arrival (midway between the two Pod samples around the change); 0 if it never did."""
    for here, after in itertools.pairwise(measured.samples):
        if after.at > measured.t0 and after.replicas != here.replicas:
            return ((here.at + after.at) / 2 - measured.t0) % tick_s
    return 0.0


def startup_delays(measured: Measured) -> list[float]:
    """At each wake from zero: first Pod seen to the first task started after it (the simulator's start-up)."""
    delays = []
    for woke in wakes(measured.samples):
        later = [s for s in measured.started if s >= woke]
        if later:
            delays.append(min(later) - woke)
    return delays


def summarize_measured(measured: Measured) -> dict[str, Any]:
    waits = sorted(start - sent for start, sent in zip(measured.started, measured.sent, strict=True))
    horizon = max(measured.done)  # the simulator stops at the last completion
    ready_delays = [at - measured.first_seen[uid] for uid, at in measured.first_ready.items()]
    return {
        "tasks": len(waits),
        "mean_wait_s": round(statistics.fmean(waits), 2),
        "p50_wait_s": report.quantile(waits, 0.50),
        "p95_wait_s": report.quantile(waits, 0.95),
        "p99_wait_s": report.quantile(waits, 0.99),
        "max_wait_s": round(waits[-1], 2),
        "worker_s": round(pod_seconds(measured.samples, horizon), 1),
        "worker_s_until_zero": round(pod_seconds(measured.samples, measured.samples[-1].at), 1),
        "ready_worker_s": round(pod_seconds(measured.samples, horizon, ready=True), 1),
        "pods_started": len(measured.first_seen),
        "max_pods": max(s.pods for s in measured.samples),
        "wakes_from_zero": len(wakes(measured.samples)),
        "startup_s": [round(d, 2) for d in startup_delays(measured)],
        "pod_seen_to_ready_s_median": round(statistics.median(ready_delays), 2) if ready_delays else None,
        "horizon_s": round(horizon - measured.t0, 1),
    }


def simulate(
    tasks: Sequence[trace.TaskSpec], settings: Settings, startup_s: float, first_tick_s: float = 0.0
) -> dict[str, Any]:
    """Our policy in the simulator with the replay's settings, the measured start-up delay and the
    measured timer phase (asked every 0.1 s, so the phase is kept to a tenth of a second). The replay's
    producer stamps its tasks, so the simulated operator knows the oldest wait too."""
    sim_config = Config(
        concurrency=settings.concurrency, max_replicas=settings.max_replicas, startup_s=startup_s, tick_s=0.1
    )
    knobs = policies.Knobs(
        slo_wait_s=policies.Knobs().slo_wait_s if settings.target_wait_s is None else settings.target_wait_s,
        stabilization_s=settings.stabilization_s,
        idle_before_zero_s=settings.idle_before_zero_s,
        operator_tick_s=settings.operator_tick_s,
        operator_first_tick_s=round(first_tick_s, 1),
        stamped=True,
        planned_startup_s=None if settings.target_wait_s is None else settings.planned_startup_s,
    )
    controller = policies.build(settings.policy, tasks, sim_config, knobs)
    return report.summarize(settings.policy, Simulation(tasks, controller, sim_config).run(), knobs.slo_wait_s)


COMPARED = ("worker_s", "mean_wait_s", "p50_wait_s", "p95_wait_s")


def compare(measured: dict[str, Any], simulated: dict[str, Any]) -> dict[str, Any]:
    """Measured / simulated per compared number, and whether it is within 25 % (a median wait near 0 s rarely
    is: a tenth of a second of network and bookkeeping is already more than 25 % of it)."""
    rows = {}
    for key in COMPARED:
        real, predicted = float(measured[key]), float(simulated[key])
        ratio = real / predicted if predicted else (1.0 if real == 0 else math.inf)
        within = abs(real - predicted) <= 0.25 * predicted
        rows[key] = {"measured": real, "simulated": predicted, "ratio": round(ratio, 2), "within_25_percent": within}
    return rows


def table(comparison: dict[str, Any]) -> str:
    lines = [f"{'':<12} {'measured':>9} {'simulated':>9} {'ratio':>6}  within 25 %"]
    for key, row in comparison.items():
        verdict = "yes" if row["within_25_percent"] else "no"
        lines.append(f"{key:<12} {row['measured']:>9.1f} {row['simulated']:>9.1f} {row['ratio']:>6.2f}  {verdict}")
    return "\n".join(lines)


def run(
    app: Celery,
    kube: demo.Kube,
    namespace: str,
    jobqueue: str,
    tasks: Sequence[trace.TaskSpec],
    settings: Settings,
    run_id: str,
) -> tuple[Measured, dict[str, Any]]:
    """Replay, simulate with the measured start-up delay, compare; returns the raw replay and the record."""
    load_before = os.getloadavg()
    measured = replay(app, kube, namespace, jobqueue, tasks, run_id)
    real = summarize_measured(measured)
    startup = statistics.median(real["startup_s"]) if real["startup_s"] else Config().startup_s
    phase = first_tick(measured, settings.operator_tick_s)
    simulated = simulate(tasks, settings, startup, phase)
    record = {
        "trace": str(TRACE.relative_to(REPO)),
        "settings": asdict(settings),
        "policy": settings.policy,
        "simulated_startup_s": round(startup, 2),
        "simulated_first_tick_s": round(phase, 1),
        "load_average_1m": {"before": round(load_before[0], 2), "after": round(os.getloadavg()[0], 2)},
        "cpus": os.cpu_count(),
        "measured": real,
        "simulated": simulated,
        "comparison": compare(real, simulated),
    }
    return measured, record


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.autoscale_replay", description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=TRACE, help=f"default: {TRACE.relative_to(REPO)}")
    parser.add_argument(
        "--json", type=Path, help=f"default: {RESULT.relative_to(REPO)} (--latency: {RESULT_LATENCY.name})"
    )
    parser.add_argument("--write-trace", action="store_true", help="regenerate the trace file and exit")
    parser.add_argument(
        "--latency",
        action="store_true",
        help=f"latency mode, targetWaitSeconds {LATENCY_TARGET_S:g} (default: backlog)",
    )
    args = parser.parse_args(argv)
    if args.write_trace:
        trace.save(args.trace, short_trace())
        print(f"wrote {args.trace}")
        return
    # The e2e suite's way of running the product: the chart, the operator, a namespace it watches.
    from jobqueue_devenv import cluster

    state = cluster.ClusterState.load(Path(os.environ["KUBECONFIG"]).parent)
    if state is None:
        raise SystemExit("KUBECONFIG does not point at a `jobqueue_devenv up` cluster")
    kube = demo.Kube.for_cluster(state)
    settings = Settings(target_wait_s=LATENCY_TARGET_S if args.latency else None)
    tasks = trace.load(args.trace)
    session = uuid.uuid4().hex[:6]
    log = Path(f"/tmp/autoscale-replay-{session}.log")
    with (
        demo.operator(kube, [f"replay-{session}-*"], log, f"jqreplay-{session}", f"jqreplay-{session}"),
        namespace_for(kube, f"replay-{session}", "bench") as namespace,
    ):
        deployer = Deployer(kube, namespace)
        try:
            deployed = deployer(manifest("replay", settings))
            _, record = run(deployed.app, kube, namespace, "replay", tasks, settings, uuid.uuid4().hex)
        finally:
            deployer.close()
    print(table(record["comparison"]))
    bench_results.write(args.json or (RESULT_LATENCY if args.latency else RESULT), record)


if __name__ == "__main__":
    main()
