"""The cluster a benchmark runs on, and a namespace of its own there.

In devenv, not in bench/, for the reason bench_results.py gives: the benchmarks run as scripts."""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

from kubernetes import client, config

from jobqueue_devenv import binaries, cluster
from jobqueue_devenv.paths import CRD_FILE, CRD_NAME
from jobqueue_devenv.waiting import wait_until


@contextlib.contextmanager
def cluster_for_bench() -> Iterator[cluster.ClusterState]:
    """The local cluster KUBECONFIG points at when it is healthy (left running), else one started for the
    benchmark and stopped after it."""
    kubeconfig = os.environ.get("KUBECONFIG")
    state = cluster.ClusterState.load(Path(kubeconfig).parent) if kubeconfig else None
    if state is not None and cluster.is_healthy(state):
        yield state
        return
    with tempfile.TemporaryDirectory(prefix="jq-bench-") as tmp:
        own, _ = cluster.up(Path(tmp) / "cluster", binaries.find())
        try:
            yield own
        finally:
            cluster.down(Path(tmp) / "cluster")


def apply_crd(kubeconfig: str) -> client.ApiClient:
    """The JobQueue CRD applied (server-side, as the chart does) and Established; an API client of the cluster."""
    kubectl = binaries.find().kubectl
    env = dict(os.environ, KUBECONFIG=kubeconfig)
    subprocess.run([kubectl, "apply", "--server-side", "--force-conflicts", "-f", CRD_FILE], env=env, check=True)
    subprocess.run([kubectl, "wait", "--for=condition=Established", f"crd/{CRD_NAME}"], env=env, check=True)
    return config.new_client_from_config(config_file=kubeconfig)


@contextlib.contextmanager
def fresh_namespace(api: client.ApiClient, prefix: str) -> Iterator[str]:
    """A namespace `<prefix>-<random>` that can hold Pods (its default ServiceAccount exists), deleted afterwards."""
    core = client.CoreV1Api(api)
    namespace = f"{prefix}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": namespace}})
    try:
        wait_until(lambda: core.read_namespaced_service_account("default", namespace), timeout=30, what="default SA")
        yield namespace
    finally:
        core.delete_namespace(namespace)


def print_seconds(result: dict[str, list[float]], labels: list[str] | None = None) -> None:
    """One line per measured series: median, worst and every run, in seconds."""
    chosen = labels if labels is not None else list(result)
    width = max(len(label) for label in chosen) + 2
    for label in chosen:
        values = result[label]
        print(
            f"{label:<{width}} median {statistics.median(values):6.2f} s   worst {max(values):6.2f} s   runs {values}"
        )
