"""No-op task throughput: one worker started by the operator against plain `celery worker`, same settings.

Both run as Pods of the local cluster (the node agent runs them alike) against the same managed Redis:
- ours: the JobQueue's worker Deployment (`jobqueue-worker`: metrics, probes, signal handling);
- plain: a Pod running the `celery worker` command on the same app, configured with exactly the Celery
  settings `jobqueue_worker.app.celery_config` gives ours, and nothing else (no metrics, no probes).
Rounds alternate ours/plain (and which goes first); each sends TASKS no-ops (no result recording) and
measures completions per second between the first and the last `date_done` in the result backend.
Prints a table and writes bench/results/worker_throughput.json. Target: ours >= 95% of plain (median over rounds).

Uses the cluster KUBECONFIG points at when it is a running local cluster, else starts its own.
Usage: python bench/worker_throughput.py [TASKS] [ROUNDS]
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from celery import Celery

from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE

RESULTS = Path(__file__).parent / "results" / "worker_throughput.json"
TARGET_RATIO = 0.95
CONCURRENCY = 2
JOBQUEUE = "bench"


def _plain_app() -> Celery | None:
    """The plain worker's app (`celery -A worker_throughput:plain_app`): the demo app, our settings only."""
    if not os.environ.get("JOBQUEUE_BENCH_PLAIN"):
        return None
    from jobqueue_worker import app as worker_app
    from jobqueue_worker import demo
    from jobqueue_worker.settings import load_settings

    demo.app.conf.update(worker_app.celery_config(load_settings(os.environ)))
    return demo.app


plain_app = _plain_app()


def manifest() -> dict[str, Any]:
    queue = {"concurrency": CONCURRENCY, "pool": "prefork", "replicas": 1, "autoscaling": {"enabled": False}}
    return {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": JOBQUEUE},
        "spec": {
            "image": "jobqueue-worker:dev",
            "app": "jobqueue_worker.demo:app",
            "queues": [{"name": "ours", **queue}],
        },
    }


def plain_pod(ours: dict[str, Any]) -> dict[str, Any]:
    """A Pod with our worker's environment (same settings) running plain `celery worker` on queue `plain`."""
    container = ours["spec"]["template"]["spec"]["containers"][0]
    env = [e for e in container["env"] if e["name"] not in ("JOBQUEUE_QUEUE", "PYTHONPATH")]
    env += [
        {"name": "JOBQUEUE_QUEUE", "value": "plain"},
        {"name": "JOBQUEUE_BENCH_PLAIN", "value": "1"},
        {"name": "PYTHONPATH", "value": str(Path(__file__).parent)},
    ]
    command = ["celery", "-A", "worker_throughput:plain_app", "worker", "-Q", "plain", "-n", "plain@%h"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "plain-celery"},
        "spec": {
            "containers": [
                {"name": "worker", "image": HOST_PROCESS_IMAGE, "command": [*command, "--loglevel", "INFO"], "env": env}
            ]
        },
    }


def one_round(app: Celery, client: Any, queue: str, tasks: int) -> float:
    """Send `tasks` no-ops to `queue`; return completions per second (first to last date_done)."""
    from jobqueue_devenv.waiting import wait_until
    from jobqueue_worker import producer

    results = producer.send(app, queue, "noop", tasks)
    keys = [f"celery-task-meta-{r.id}" for r in results]

    def all_done() -> list[Any] | None:
        values = client.mget(keys)
        return values if all(values) else None

    values = wait_until(all_done, timeout=600, what=f"{tasks} no-ops done on {queue}", interval=0.5)
    times = sorted(datetime.fromisoformat(json.loads(v)["date_done"]) for v in values)
    return (tasks - 1) / (times[-1] - times[0]).total_seconds()


def main() -> None:
    import redis

    from jobqueue_devenv import binaries, cluster, demo
    from jobqueue_devenv.waiting import wait_until
    from jobqueue_worker import producer

    tasks = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 3
    kubeconfig = os.environ.get("KUBECONFIG")
    state = cluster.ClusterState.load(Path(kubeconfig).parent) if kubeconfig else None
    own = state is None or not cluster.is_healthy(state)
    directory = Path(tempfile.mkdtemp(prefix="jobqueue-bench-")) if own else Path(state.directory)  # type: ignore[union-attr]
    if own:
        state, _ = cluster.up(directory, binaries.ensure())
    assert state is not None
    kube = demo.Kube.for_cluster(state)
    namespace = f"bench-{uuid.uuid4().hex[:6]}"
    kube.kubectl("create", "namespace", namespace)
    rates: dict[str, list[float]] = {"ours": [], "plain": []}
    try:
        with demo.operator(kube, [namespace], directory / f"{namespace}-operator.log", namespace, f"{namespace}-op"):
            kube.kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=json.dumps(manifest()))
            wait_until(lambda: demo.is_ready(kube, namespace, JOBQUEUE), timeout=180, what="JobQueue bench Ready")
            ours = kube.get("deployment", f"{JOBQUEUE}-ours-worker", "-n", namespace)
            kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(plain_pod(ours)))
            kube.kubectl("wait", "-n", namespace, "--for=condition=Ready", "pod/plain-celery", "--timeout=60s")
            url = demo.broker_url(kube, namespace, JOBQUEUE)
            app = producer.producer_app(url)
            client = redis.Redis.from_url(url)
            wait_until(lambda: len(app.control.ping(timeout=1.0)) >= 2, timeout=120, what="both workers answering")
            one_round(app, client, "ours", 50)  # warm-up: pool children forked, connections open
            one_round(app, client, "plain", 50)
            for index in range(rounds):
                for queue in ("ours", "plain") if index % 2 == 0 else ("plain", "ours"):  # neither always first
                    rates[queue].append(one_round(app, client, queue, tasks))
                    print(f"  {queue:<6} {rates[queue][-1]:8.1f} tasks/s", file=sys.stderr, flush=True)
            client.close()
            app.close()
            report(rates, tasks, rounds)  # before the clean-up, whose trouble must not lose the numbers
            # While the operator runs: kopf's finalizer on the JobQueue needs it to let the deletion finish.
            # The JobQueue first: deleting the namespace would also delete the operator's RoleBinding in it,
            # and the finalizer could no longer clean up.
            kube.kubectl("delete", "jobqueue", JOBQUEUE, "-n", namespace, "--timeout=120s")
            kube.kubectl("delete", "namespace", namespace, "--timeout=120s")
    finally:
        if own:
            cluster.down(directory)


def report(rates: dict[str, list[float]], tasks: int, rounds: int) -> None:
    ours, plain = statistics.median(rates["ours"]), statistics.median(rates["plain"])
    ratio = ours / plain
    print(f"\nno-op throughput, one worker, concurrency {CONCURRENCY} prefork, {tasks} tasks x {rounds} rounds")
    print(f"{'worker':<28} {'median tasks/s':>15} {'rounds':>30}")
    for name, key in (("jobqueue-worker (operator)", "ours"), ("plain celery worker", "plain")):
        print(f"{name:<28} {statistics.median(rates[key]):>15.1f} {', '.join(f'{r:.1f}' for r in rates[key]):>30}")
    verdict = "meets" if ratio >= TARGET_RATIO else "MISSES"
    print(f"ours / plain = {ratio:.1%} ({verdict} the {TARGET_RATIO:.0%} target)")
    from jobqueue_devenv import bench_results  # not at the top: the plain worker's Pod imports this module

    bench_results.write(
        RESULTS,
        {
            "benchmark": "worker_throughput",
            "settings": {"concurrency": CONCURRENCY, "pool": "prefork", "prefetch_multiplier": 1, "task": "noop"},
            "tasks_per_round": tasks,
            "rounds": rounds,
            "tasks_per_second": {"ours": rates["ours"], "plain": rates["plain"]},
            "median_tasks_per_second": {"ours": round(ours, 1), "plain": round(plain, 1)},
            "ratio": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "meets_target": ratio >= TARGET_RATIO,
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


if __name__ == "__main__":
    main()
