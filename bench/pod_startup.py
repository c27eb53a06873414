"""How fast the local node agent gets a Pod going: from bound to the node until Running and Ready.

Creates RUNS Pods (default 10) one after the other, each running a trivial process (`sleep`) with
no probe, and watches them: the time the watch shows the Pod bound (spec.nodeName set), Running,
and Ready, all measured on this machine's clock. Prints a table and writes
bench/results/pod_startup.json. Target: bound -> Running and Ready in under 2 s.

Uses the cluster KUBECONFIG points at when it is a running local cluster, else starts its own.
Usage: python bench/pod_startup.py [RUNS]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from jobqueue_devenv import bench_results, binaries, cluster, versions
from jobqueue_devenv.waiting import wait_until

RESULTS = Path(__file__).parent / "results" / "pod_startup.json"
TARGET_SECONDS = 2.0


def one_pod(core: client.CoreV1Api, namespace: str, name: str) -> dict[str, float]:
    body = {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": "ignored", "command": ["sleep", "3600"]}]},
    }
    created = time.monotonic()
    seen: dict[str, float] = {}
    stream = watch.Watch()
    core.create_namespaced_pod(namespace, body)
    for event in stream.stream(
        core.list_namespaced_pod, namespace, field_selector=f"metadata.name={name}", timeout_seconds=30
    ):
        pod: Any = event["object"]
        now = time.monotonic()
        if pod.spec.node_name:
            seen.setdefault("bound", now)
        if pod.status.phase == "Running":
            seen.setdefault("running", now)
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            seen.setdefault("ready", now)
            stream.stop()
    if "ready" not in seen:
        raise RuntimeError(f"pod {name} did not become Ready within 30 s")
    return {
        "create -> bound": round(seen["bound"] - created, 3),
        "bound -> Running": round(seen["running"] - seen["bound"], 3),
        "bound -> Ready": round(seen["ready"] - seen["bound"], 3),
        "create -> Ready": round(seen["ready"] - created, 3),
    }


def measure(kubeconfig: str, runs: int) -> list[dict[str, float]]:
    core = client.CoreV1Api(config.new_client_from_config(config_file=kubeconfig))
    namespace = f"bench-pods-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        wait_until(lambda: core.read_namespaced_service_account("default", namespace), timeout=30, what="default SA")
        return [one_pod(core, namespace, f"trivial-{i}") for i in range(runs)]
    finally:
        core.delete_namespace(namespace)


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    state = None
    if os.environ.get("KUBECONFIG"):
        state = cluster.ClusterState.load(Path(os.environ["KUBECONFIG"]).parent)
    if state is not None and cluster.is_healthy(state):
        samples = measure(state.kubeconfig, runs)
    else:
        with tempfile.TemporaryDirectory(prefix="jq-bench-") as tmp:
            own, _ = cluster.up(Path(tmp) / "cluster", binaries.find())
            try:
                samples = measure(own.kubeconfig, runs)
            finally:
                cluster.down(Path(tmp) / "cluster")
    columns = list(samples[0])
    width = max(len(c) for c in columns)
    print(f"pod start-up on the local node agent, {runs} pods one after another, seconds")
    print(f"{'interval':<{width}}  median    max")
    summary: dict[str, dict[str, float]] = {}
    for column in columns:
        values = [s[column] for s in samples]
        summary[column] = {"median": round(statistics.median(values), 3), "max": max(values)}
        print(f"{column:<{width}}  {summary[column]['median']:6.3f} {summary[column]['max']:6.3f}")
    worst = summary["bound -> Ready"]["max"]
    verdict = "within" if worst < TARGET_SECONDS else "OVER"
    print(f"\nworst bound -> Ready: {worst:.3f}s ({verdict} the {TARGET_SECONDS:g}s target)")
    bench_results.write(
        RESULTS,
        {
            "benchmark": "pod_startup",
            "kubernetes": versions.K8S_VERSION,
            "target_seconds": TARGET_SECONDS,
            "runs": samples,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
