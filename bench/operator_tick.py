"""What the operator's whole autoscaler tick costs for 1,000 queues: 20 JobQueues of 50 queues (the CRD's
maximum), each with its own Redis database on a real redis-server, read in one pipeline per JobQueue,
then rates, `decide`, the status the autoscaler writes and the metrics export (scaling.tick).

The Kubernetes API is a stub here (it answers from memory and counts calls): its cost is one Deployment
list per JobQueue per tick, plus a scale call per change, measured by bench/operator_reconcile.py's kind
of numbers, not this one. Printed, and JSON in bench/results/operator_tick.json.

    .venv/bin/python bench/operator_tick.py [--jobqueues 20] [--queues 50] [--rounds 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
from prometheus_client import generate_latest

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "operator")]

from jobqueue_devenv import bench_results  # noqa: E402
from jobqueue_devenv.processes import free_port  # noqa: E402
from jobqueue_devenv.redis_process import RedisServer  # noqa: E402
from jobqueue_operator import metrics, scaling  # noqa: E402

RESULTS = ROOT / "bench" / "results" / "operator_tick.json"


class StubKube:
    """The calls scaling.tick makes, answered from memory."""

    def __init__(self, url: str, queues: list[str]) -> None:
        self.url, self.calls = url, 0
        self.replicas = dict.fromkeys(queues, 1)

    def secret_data(self, namespace: str, name: str) -> dict[str, str]:
        self.calls += 1
        return {"url": base64.b64encode(self.url.encode()).decode()}

    def worker_deployments(self, namespace: str, jobqueue: str) -> dict[str, Any]:
        self.calls += 1
        return {
            q: {"metadata": {"name": f"{jobqueue}-{q}-worker"}, "spec": {"replicas": r}, "status": {"replicas": r}}
            for q, r in self.replicas.items()
        }

    def pods(self, namespace: str, selector: str) -> list[Any]:
        self.calls += 1
        return []

    def annotate_pod(self, namespace: str, name: str, annotations: dict[str, str]) -> None:
        self.calls += 1

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        self.calls += 1
        self.replicas[name.split("-")[-2]] = replicas

    def apply_status(self, namespace: str, name: str, status: dict[str, Any], manager: str) -> None:
        self.calls += 1

    def post_event(self, involved: Any, type_: str, reason: str, message: str) -> None:
        self.calls += 1


def _body(name: str, queues: list[str]) -> dict[str, Any]:
    autoscaling = {
        "minReplicas": 0,
        "maxReplicas": 50,
        "scaleDownStabilizationSeconds": 60,
        "idleSecondsBeforeZero": 60,
    }
    return {
        "metadata": {"name": name, "namespace": "bench", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "a:app",
            "broker": {"external": {"urlSecretRef": {"name": "s", "key": "url"}}},
            "queues": [{"name": q, "concurrency": 4, "autoscaling": autoscaling} for q in queues],
        },
    }


def _fill(client: redis.Redis, queues: list[str], tick: int) -> None:
    """Waiting tasks over two priority lists, some in flight, growing completion counters."""
    pipe = client.pipeline(transaction=False)
    for i, queue in enumerate(queues):
        message = json.dumps({"headers": {"jobqueue_sent_at": time.time() - i}, "properties": {}})
        pipe.delete(queue, f"{queue}\x06\x169")
        if i % 7:
            pipe.lpush(queue, *[message] * (i % 7))
        pipe.lpush(f"{queue}\x06\x169", *[message] * (i % 3 + 1))
        pipe.hset("unacked", f"{queue}-{tick}", json.dumps([{}, "", queue]))
        pipe.hdel("unacked", f"{queue}-{tick - 2}")  # two in flight per queue
        pipe.hincrby(f"jobqueue:stats:{queue}", "completed", 5)
        pipe.hincrbyfloat(f"jobqueue:stats:{queue}", "run_seconds", 5.0)
        pipe.hincrbyfloat(f"jobqueue:stats:{queue}", "run_seconds_sq", 5.0)
    pipe.execute()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobqueues", type=int, default=20)
    parser.add_argument("--queues", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="jq-bench-redis-"))
    server = RedisServer(directory, port=free_port(), password=None, databases=args.jobqueues)
    port = server.port
    try:
        server.start()
        registry = metrics.OperatorMetrics()
        names = [f"q{i:03d}" for i in range(args.queues)]
        setups = []
        for j in range(args.jobqueues):
            url = server.url_for(j)
            setups.append(
                (_body(f"jq{j:02d}", names), StubKube(url, names), scaling.Memory(), redis.Redis(port=port, db=j))
            )
        rounds: list[float] = []
        per_jobqueue: list[float] = []
        for r in range(args.rounds):
            for _, _, _, client in setups:
                _fill(client, names, r)
            started = time.perf_counter()
            for body, kube, memory, _ in setups:
                one = time.perf_counter()
                scaling.tick(kube, body, memory, registry)  # type: ignore[arg-type]
                per_jobqueue.append(time.perf_counter() - one)
            rounds.append(time.perf_counter() - started)
        scrape = time.perf_counter()
        exported = generate_latest(registry.registry)
        scrape_seconds = time.perf_counter() - scrape
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)
    queues = args.jobqueues * args.queues
    result = {
        "queues": queues,
        "jobqueues": args.jobqueues,
        "queues_per_jobqueue": args.queues,
        "rounds": args.rounds,
        "tick_all_queues_median_s": statistics.median(rounds),
        "tick_all_queues_p95_s": sorted(rounds)[int(0.95 * (len(rounds) - 1))],
        "tick_one_jobqueue_median_s": statistics.median(per_jobqueue),
        "scrape_s": scrape_seconds,
        "scrape_bytes": len(exported),
        "kubernetes_api": "stubbed: one Deployment list per JobQueue per tick, one scale call per change",
    }
    bench_results.write(RESULTS, result)
    print(f"whole autoscaler tick, {queues} queues ({args.jobqueues} JobQueues x {args.queues}), real Redis:")
    median, p95 = result["tick_all_queues_median_s"], result["tick_all_queues_p95_s"]
    print(f"  all queues: median {median * 1000:.1f} ms, p95 {p95 * 1000:.1f} ms")
    print(f"  one JobQueue of {args.queues}: median {result['tick_one_jobqueue_median_s'] * 1000:.2f} ms")
    print(f"  /metrics scrape: {scrape_seconds * 1000:.1f} ms, {len(exported)} bytes")


if __name__ == "__main__":
    main()
