"""How fast the operator turns a new JobQueue into its children and a written Ready condition.

The operator runs as a real process (`jobqueue-operator --namespace <ns>`) against the local cluster.
A JobQueue counts as done when the bench has seen every child it should own (the broker's Secret,
StatefulSet and Service, one Deployment per queue) and a `Ready` condition whose observedGeneration is
the JobQueue's generation, whatever its value. Times are taken on this machine's clock from just before
the API create to the watch event that shows the last of those, so they include watch latency.

- one: RUNS JobQueues (default 20) created one after the other, each fresh; p50/p95 of create -> done.
- ready: RUNS JobQueues created one after the other in a namespace that admits Pods, with the operator's
  default settings: p50/p95 of create -> `Ready=True` (the managed Redis Pod started and ready, and the
  status following it), the time a user waits after `kubectl apply`.
- hundred: 100 JobQueues created back to back; time from the first create until all 100 are done.
- memory: the operator's resident set size (VmRSS) while it holds 100 JobQueues, sampled until one
  full resync pass (JOBQUEUE_RESYNC_SECONDS, 30 s by default) has run over all of them.

Each JobQueue has a managed broker (no persistence) and three queues that want no workers, and a
ResourceQuota of zero Pods keeps the Redis Pods from starting, so what is timed is the operator and the
API server, not Pod start-up (bench/pod_startup.py times that). Targets: one p95 < 1 s, hundred < 30 s, RSS < 200 MB.
Prints a table, writes bench/results/operator_reconcile.json.

Uses the cluster KUBECONFIG points at when it is a running local cluster, else starts its own.
Usage: python bench/operator_reconcile.py [--runs 20] [--many 100] [--rounds 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, config, watch

from jobqueue_devenv import bench_results, versions
from jobqueue_devenv.bench_cluster import apply_crd, cluster_for_bench
from jobqueue_devenv.demo import UNPULLED_IMAGE, jobqueue_document
from jobqueue_devenv.operator_process import host_operator
from jobqueue_operator import naming

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "operator_reconcile.json"
GROUP, VERSION, PLURAL = "jobqueue.dev", "v1alpha1", "jobqueues"
QUEUES = ("high", "low", "thumbnails")
TARGETS = {"one_p95_seconds": 1.0, "hundred_seconds": 30.0, "rss_mb": 200.0, "ready_p95": 10.0}
RESYNC_SECONDS = float(os.environ.get("JOBQUEUE_RESYNC_SECONDS", "30"))


def jobqueue(name: str) -> dict[str, Any]:
    """A JobQueue like the media sample: managed Redis, three queues, none of them wanting workers now."""
    queues = [
        {"name": "high", "concurrency": 4, "autoscaling": {"minReplicas": 0, "maxReplicas": 20}},
        {"name": "low", "concurrency": 2, "autoscaling": {"minReplicas": 0, "maxReplicas": 5}},
        {"name": "thumbnails", "concurrency": 8, "pool": "threads", "replicas": 0},
    ]
    broker = {"managed": {"persistence": {"enabled": False}}}
    return jobqueue_document(name, image=UNPULLED_IMAGE, app="jobqueue_worker.demo:app", broker=broker, queues=queues)


def expected_children(name: str) -> set[tuple[str, str]]:
    workers = {("Deployment", naming.worker_deployment(name, q)) for q in QUEUES}
    broker = {
        ("Secret", naming.redis_secret(name)),
        ("StatefulSet", naming.redis(name)),
        ("Service", naming.redis(name)),
    }
    return workers | broker


class Watcher:
    """Watches the namespace's JobQueues and children; remembers when each was first seen done/created."""

    def __init__(self, api: client.ApiClient, namespace: str) -> None:
        self.namespace = namespace
        self.lock = threading.Condition()
        self.created: dict[tuple[str, str], float] = {}
        self.ready_written: dict[str, float] = {}
        self.ready_true: dict[str, float] = {}
        self.streams: list[watch.Watch] = []
        self.stopping = False
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        custom = client.CustomObjectsApi(api)
        sources: list[tuple[str, Callable[..., Any]]] = [
            ("Secret", core.list_namespaced_secret),
            ("Service", core.list_namespaced_service),
            ("StatefulSet", apps.list_namespaced_stateful_set),
            ("Deployment", apps.list_namespaced_deployment),
        ]
        for kind, lister in sources:
            threading.Thread(target=self._watch_children, args=(kind, lister), daemon=True).start()
        threading.Thread(target=self._watch_jobqueues, args=(custom,), daemon=True).start()

    def _stream(self, lister: Callable[..., Any], *args: Any) -> Iterator[dict[str, Any]]:
        while not self.stopping:
            stream = watch.Watch()
            self.streams.append(stream)
            try:
                yield from stream.stream(lister, *args, timeout_seconds=30)
            except (client.ApiException, urllib3.exceptions.HTTPError):
                time.sleep(0.1)  # the namespace is going away, or the watch broke: start again or stop

    def _watch_children(self, kind: str, lister: Callable[..., Any]) -> None:
        for event in self._stream(lister, self.namespace):
            now = time.monotonic()
            if event["type"] == "ADDED":
                with self.lock:
                    self.created.setdefault((kind, event["object"].metadata.name), now)
                    self.lock.notify_all()

    def _watch_jobqueues(self, custom: client.CustomObjectsApi) -> None:
        lister = custom.list_namespaced_custom_object
        for event in self._stream(lister, GROUP, VERSION, self.namespace, PLURAL):
            now = time.monotonic()
            body = event["object"]
            generation = body["metadata"].get("generation")
            conditions = (body.get("status") or {}).get("conditions") or []
            ready = [c for c in conditions if c["type"] == "Ready" and c.get("observedGeneration") == generation]
            if ready:
                with self.lock:
                    self.ready_written.setdefault(body["metadata"]["name"], now)
                    if ready[0]["status"] == "True":
                        self.ready_true.setdefault(body["metadata"]["name"], now)
                    self.lock.notify_all()

    def done_at(self, name: str) -> float | None:
        """When `name` had all its children and its Ready condition; None while it has not."""
        times = [self.created.get(key) for key in expected_children(name)] + [self.ready_written.get(name)]
        return None if None in times else max(t for t in times if t is not None)

    def wait(self, names: list[str], timeout: float, ready: bool = False) -> dict[str, float]:
        """When each of `names` was done (or, with `ready`, first Ready=True)."""
        deadline = time.monotonic() + timeout
        with self.lock:
            while True:
                done = {name: self.ready_true.get(name) if ready else self.done_at(name) for name in names}
                if all(t is not None for t in done.values()):
                    return {name: t for name, t in done.items() if t is not None}
                left = deadline - time.monotonic()
                if left <= 0:
                    missing = [name for name, t in done.items() if t is None]
                    raise TimeoutError(f"{len(missing)} JobQueues not done after {timeout:g}s: {missing[:5]}")
                self.lock.wait(left)

    def stop(self) -> None:
        self.stopping = True
        for stream in self.streams:
            stream.stop()


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def operator_process(kubeconfig: str, namespace: str, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`jobqueue-operator` watching `namespace`, up and serving its liveness endpoint."""
    with host_operator(kubeconfig, namespace, log, timeout=60) as running:
        yield running.process


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile: the smallest value with at least `fraction` of the values at or below it."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * fraction // 1))
    return ordered[int(rank) - 1]


def ready_times(api: client.ApiClient, kubeconfig: str, runs: int, log: Path) -> list[float]:
    """create -> Ready=True of `runs` JobQueues one after the other, their Redis Pods really running."""
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    namespace = f"bench-ready-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    watcher = Watcher(config.new_client_from_config(config_file=kubeconfig), namespace)
    times = []
    try:
        # The operator's default resync and tick (the chart's): no JOBQUEUE_RESYNC_SECONDS override.
        with host_operator(kubeconfig, namespace, log, timeout=60):
            for i in range(runs):
                name = f"ready-{i}"
                started = time.monotonic()
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, jobqueue(name))
                times.append(round(watcher.wait([name], timeout=120, ready=True)[name] - started, 3))
                custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    finally:
        watcher.stop()
        core.delete_namespace(namespace)
    return times


def one_round(api: client.ApiClient, kubeconfig: str, runs: int, many: int, log: Path) -> dict[str, Any]:
    core = client.CoreV1Api(api)
    custom = client.CustomObjectsApi(api)
    namespace = f"bench-jq-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    # No Pods: 100 Redis Pods starting on the node agent would time the node agent, not the operator.
    quota = {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}}
    core.create_namespaced_resource_quota(namespace, quota)
    watcher = Watcher(config.new_client_from_config(config_file=kubeconfig), namespace)
    try:
        with operator_process(kubeconfig, namespace, log) as operator:
            idle_rss = rss_mb(operator.pid)
            singles = []
            for i in range(runs):
                name = f"one-{i}"
                started = time.monotonic()
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, jobqueue(name))
                singles.append(round(watcher.wait([name], timeout=60)[name] - started, 3))
                custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)

            names = [f"many-{i}" for i in range(many)]
            cpu_before = cpu_seconds(operator.pid)
            started = time.monotonic()
            for name in names:
                custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, jobqueue(name))
            created_all = time.monotonic() - started
            done = watcher.wait(names, timeout=300)
            offsets = [t - started for t in done.values()]
            all_done = max(offsets)
            cpu_many = cpu_seconds(operator.pid) - cpu_before

            # Hold the 100 through one full resync pass (every JobQueue is reconciled again) and keep the peak.
            samples = [rss_mb(operator.pid)]
            settle_until = time.monotonic() + RESYNC_SECONDS + 5
            while time.monotonic() < settle_until:
                time.sleep(0.5)
                samples.append(rss_mb(operator.pid))
    finally:
        watcher.stop()
        core.delete_namespace(namespace)
    ready = ready_times(api, kubeconfig, runs, log.with_suffix(".ready.log"))
    return {
        "ready": {
            "runs": ready,
            "p50_seconds": round(statistics.median(ready), 3),
            "p95_seconds": round(percentile(ready, 0.95), 3),
            "max_seconds": max(ready),
        },
        "one": {
            "runs": singles,
            "p50_seconds": round(statistics.median(singles), 3),
            "p95_seconds": round(percentile(singles, 0.95), 3),
            "max_seconds": max(singles),
        },
        "hundred": {
            "jobqueues": many,
            "create_calls_seconds": round(created_all, 3),
            "p50_seconds": round(statistics.median(offsets), 3),
            "p95_seconds": round(percentile(offsets, 0.95), 3),
            "all_done_seconds": round(all_done, 3),
            "operator_cpu_seconds": round(cpu_many, 2),
        },
        "memory": {
            "idle_rss_mb": round(idle_rss, 1),
            "rss_mb_after_hundred": round(samples[0], 1),
            "peak_rss_mb_through_resync": round(max(samples), 1),
        },
    }


def measure(kubeconfig: str, runs: int, many: int, rounds: int) -> list[dict[str, Any]]:
    api = apply_crd(kubeconfig)
    results = []
    with tempfile.TemporaryDirectory(prefix="jq-bench-operator-") as tmp:
        for number in range(rounds):
            log = Path(tmp) / f"operator-{number}.log"
            try:
                results.append(one_round(api, kubeconfig, runs, many, log))
            except Exception:
                print(log.read_text()[-3000:], file=sys.stderr)
                raise
    return results


def report(rounds: list[dict[str, Any]]) -> None:
    rows = [
        ("one JobQueue: create -> Ready=True, p50", "s", [r["ready"]["p50_seconds"] for r in rounds], None),
        ("one JobQueue: create -> Ready=True, p95", "s", [r["ready"]["p95_seconds"] for r in rounds], "ready_p95"),
        ("one JobQueue: create -> done, p50", "s", [r["one"]["p50_seconds"] for r in rounds], None),
        ("one JobQueue: create -> done, p95", "s", [r["one"]["p95_seconds"] for r in rounds], "one_p95_seconds"),
        ("100 at once: p50 of the 100", "s", [r["hundred"]["p50_seconds"] for r in rounds], None),
        ("100 at once: all done", "s", [r["hundred"]["all_done_seconds"] for r in rounds], "hundred_seconds"),
        ("operator CPU for the 100", "s", [r["hundred"]["operator_cpu_seconds"] for r in rounds], None),
        ("operator RSS, idle", "MB", [r["memory"]["idle_rss_mb"] for r in rounds], None),
        ("operator RSS with 100, peak", "MB", [r["memory"]["peak_rss_mb_through_resync"] for r in rounds], "rss_mb"),
    ]
    print(f"operator reconcile, {len(rounds)} round(s) (one value per round), {os.cpu_count()} CPUs, machine shared")
    width = max(len(row[0]) for row in rows)
    print(f"{'measure':<{width}}  {'values':<24} target")
    for label, unit, values, target in rows:
        shown = " ".join(f"{v:g}" for v in values) + f" {unit}"
        verdict = ""
        if target is not None:
            limit = TARGETS[target]
            verdict = f"< {limit:g} {unit}: " + ("met" if max(values) < limit else "MISSED")
        print(f"{label:<{width}}  {shown:<24} {verdict}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20, help="single JobQueues, one after the other")
    parser.add_argument("--many", type=int, default=100, help="JobQueues created at once")
    parser.add_argument("--rounds", type=int, default=1, help="repeat everything, each with a fresh operator")
    args = parser.parse_args()
    with cluster_for_bench() as state:
        rounds = measure(state.kubeconfig, args.runs, args.many, args.rounds)
    report(rounds)
    bench_results.write(
        RESULTS,
        {
            "benchmark": "operator_reconcile",
            "kubernetes": versions.K8S_VERSION,
            "machine": {"shared": True},
            "targets": TARGETS,
            "resync_seconds": RESYNC_SECONDS,
            "rounds": rounds,
        },
    )


if __name__ == "__main__":
    main()
