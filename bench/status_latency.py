"""How fast the status tells the truth, with the operator's default settings (30 s resync):

- crash: a JobQueue whose app cannot be imported, applied -> its Degraded condition names the cause
  (`ModuleNotFoundError`), the crash loop seen and quoted without anyone opening a Pod;
- secret: the external broker's Secret changed to a new URL -> a worker Pod running (its container
  started, so its environment read) that did not exist before the change: the first worker on the new
  value. (The broker here does not answer, so the old Pods are never Ready: the rolling update keeps them
  while the new ones are not Ready either, as Kubernetes does; with a broker that answers it completes.)

The operator runs as a process on the host against the local cluster (the one KUBECONFIG points at, else
its own). Prints a table, writes bench/results/status_latency.json.

    PYTHONPATH=devenv .venv/bin/python bench/status_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import base64
import tempfile
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from jobqueue_devenv import bench_results
from jobqueue_devenv.bench_cluster import apply_crd, cluster_for_bench, fresh_namespace, print_seconds
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results" / "status_latency.json"
GROUP, VERSION, PLURAL = "jobqueue.dev", "v1alpha1", "jobqueues"


def _jobqueue(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {"image": "jobqueue-worker:dev", "app": "jobqueue_worker.demo:app", **spec},
    }


def _condition(custom: client.CustomObjectsApi, namespace: str, name: str, type_: str) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), {})


def crash_seconds(api: client.ApiClient, namespace: str, i: int) -> float:
    custom = client.CustomObjectsApi(api)
    name = f"crash-{i}"
    body = _jobqueue(name, app="no_such_module.tasks:app", queues=[{"name": "q", "replicas": 1}])
    started = time.monotonic()
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    wait_until(
        lambda: "ModuleNotFoundError" in _condition(custom, namespace, name, "Degraded").get("message", ""),
        timeout=120,
        what=f"{name}'s Degraded condition naming the cause",
        interval=0.2,
    )
    seconds = time.monotonic() - started
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return seconds


def _url_secret(core: client.CoreV1Api, namespace: str, name: str, url: str) -> None:
    data = {"url": base64.b64encode(url.encode()).decode()}
    try:
        core.replace_namespaced_secret(name, namespace, {"metadata": {"name": name}, "data": data})
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": data})


def secret_seconds(api: client.ApiClient, namespace: str, i: int) -> float:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = f"roll-{i}"
    _url_secret(core, namespace, f"{name}-url", "redis://10.0.0.1:6379/0")
    broker = {"external": {"urlSecretRef": {"name": f"{name}-url", "key": "url"}}}
    custom.create_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, _jobqueue(name, broker=broker, queues=[{"name": "q", "replicas": 2}])
    )
    selector = f"jobqueue.dev/jobqueue={name}"

    def running() -> set[str]:
        listed = core.list_namespaced_pod(namespace, label_selector=selector).items
        return {p.metadata.uid for p in listed if any(s.state.running for s in p.status.container_statuses or [])}

    wait_until(lambda: len(running()) == 2, timeout=60, what=f"{name}'s two workers")
    old = running()
    started = time.monotonic()
    _url_secret(core, namespace, f"{name}-url", "redis://10.0.0.2:6379/0")
    wait_until(lambda: running() - old, timeout=120, what=f"{name}'s worker on the new URL", interval=0.2)
    seconds = time.monotonic() - started
    custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return seconds


def measure(kubeconfig: str, runs: int) -> dict[str, Any]:
    api = apply_crd(kubeconfig)
    with (
        fresh_namespace(api, "bench-status") as namespace,
        tempfile.TemporaryDirectory() as tmp,
        host_operator(kubeconfig, namespace, Path(tmp) / "operator.log"),
    ):
        crash = [round(crash_seconds(api, namespace, i), 2) for i in range(runs)]
        secret = [round(secret_seconds(api, namespace, i), 2) for i in range(runs)]
    return {"crash_to_condition_seconds": crash, "secret_to_worker_on_new_value_seconds": secret}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    with cluster_for_bench() as state:
        result = measure(state.kubeconfig, args.runs)
    print_seconds(result)
    bench_results.write(RESULTS, {"benchmark": "status_latency", "runs": args.runs, **result})


if __name__ == "__main__":
    main()
