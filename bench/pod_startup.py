"""How fast the local node agent gets a Pod going: from bound to the node until Running and Ready.

Two cases, RUNS Pods each (default 10), one after the other, each running `sleep` with no probe:
`process` (an image that is not in local storage: a host process) and `image` (from the worker image
`jobqueue-worker:dev`, run with runc: overlay root, the Pod's network namespace, cgroup). The watch
records when the Pod is bound (spec.nodeName set), Running and Ready, on this machine's clock. Prints a
table per case and writes bench/results/pod_startup.json. Targets: bound -> Ready in under 2 s for a
process, a median under 3 s from an image (`make images` first).

Uses the cluster KUBECONFIG points at when it is a running local cluster, else starts its own.
Usage: python bench/pod_startup.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch

from jobqueue_devenv import bench_results, images, versions
from jobqueue_devenv.bench_cluster import cluster_for_bench, fresh_namespace
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE

RESULTS = Path(__file__).parent / "results" / "pod_startup.json"
TARGET_SECONDS = 2.0
IMAGE_TARGET_SECONDS = 3.0
"""Median bound -> Ready of a Pod from an image."""
CASES = {"process": HOST_PROCESS_IMAGE, "image": images.WORKER.reference}
"""Case -> the Pods' image."""


def one_pod(core: client.CoreV1Api, namespace: str, name: str, image: str) -> dict[str, float]:
    body = {
        "metadata": {"name": name},
        "spec": {"containers": [{"name": "main", "image": image, "command": ["sleep", "3600"]}]},
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


def measure(kubeconfig: str, runs: int) -> dict[str, list[dict[str, float]]]:
    api = config.new_client_from_config(config_file=kubeconfig)
    core = client.CoreV1Api(api)
    with fresh_namespace(api, "bench-pods") as namespace:
        return {
            case: [one_pod(core, namespace, f"{case}-{i}", image) for i in range(runs)] for case, image in CASES.items()
        }


def table(case: str, samples: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    columns = list(samples[0])
    width = max(len(c) for c in columns)
    print(f"\n{case}: pod start-up on the local node agent, {len(samples)} pods one after another, seconds")
    print(f"{'interval':<{width}}  median    max")
    summary: dict[str, dict[str, float]] = {}
    for column in columns:
        values = [s[column] for s in samples]
        summary[column] = {"median": round(statistics.median(values), 3), "max": max(values)}
        print(f"{column:<{width}}  {summary[column]['median']:6.3f} {summary[column]['max']:6.3f}")
    return summary


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 10
    with cluster_for_bench() as state:
        samples = measure(state.kubeconfig, runs)
    process = table("process", samples["process"])
    image = table("image", samples["image"])
    worst = process["bound -> Ready"]["max"]
    median = image["bound -> Ready"]["median"]
    print(f"\nprocess: worst bound -> Ready {worst:.3f}s ({'within' if worst < TARGET_SECONDS else 'OVER'} "
          f"the {TARGET_SECONDS:g}s target)")  # fmt: skip
    print(f"image: median bound -> Ready {median:.3f}s ({'within' if median < IMAGE_TARGET_SECONDS else 'OVER'} "
          f"the {IMAGE_TARGET_SECONDS:g}s target)")  # fmt: skip
    bench_results.write(
        RESULTS,
        {
            "benchmark": "pod_startup",
            "kubernetes": versions.K8S_VERSION,
            "target_seconds": TARGET_SECONDS,
            "runs": samples["process"],
            "summary": process,
            "image": {
                "image": CASES["image"],
                "target_median_seconds": IMAGE_TARGET_SECONDS,
                "runs": samples["image"],
                "summary": image,
            },
        },
    )


if __name__ == "__main__":
    main()
