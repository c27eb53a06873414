"""`make prometheus` (issue 19, point 12): a real Prometheus on the host that scrapes the local cluster the
way the chart's monitors say. Started as the make target starts it, it must find a worker Pod through
Kubernetes service discovery with the PodMonitor's selection and labels, scrape it, and stop on Ctrl-C."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
import uuid
from typing import Any

from kubernetes import client

from jobqueue_devenv import cluster, images
from jobqueue_devenv.paths import REPO
from jobqueue_devenv.processes import free_port
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming

METRICS_PORT = 9808
SERVE_METRICS = (
    "import time; from prometheus_client import Counter, start_http_server; "
    f"Counter('h6_local_prometheus_probe', 'a series to scrape').inc(); start_http_server({METRICS_PORT}); "
    "time.sleep(3600)"
)


def _worker_like_pod(name: str) -> dict[str, Any]:
    """A Pod the chart's PodMonitor selects (the labels and port name of a JobQueue's worker Pod)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "labels": {"app.kubernetes.io/managed-by": naming.OPERATOR_NAME, naming.COMPONENT_LABEL: naming.WORKER},
        },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [
                {
                    "name": "worker",
                    "image": images.WORKER.reference,
                    "command": ["python", "-c", SERVE_METRICS],
                    "ports": [{"name": "metrics", "containerPort": METRICS_PORT}],
                }
            ],
        },
    }


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=5) as reply:
        found: dict[str, Any] = json.loads(reply.read())
    return found


def test_make_prometheus_scrapes_a_worker_pod_as_the_podmonitor_says_and_stops_on_ctrl_c(
    local_cluster: cluster.ClusterState, core: client.CoreV1Api, namespace: str
) -> None:
    pod = "metrics-probe"
    core.create_namespaced_pod(namespace, _worker_like_pod(pod))
    port = free_port()
    command = [
        sys.executable, "-m", "jobqueue_devenv", "--dir", str(local_cluster.directory), "prometheus",
        "--port", str(port), "--release", f"absent-{uuid.uuid4().hex[:6]}",  # the chart's default values
    ]  # fmt: skip
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(str(REPO / d) for d in ("devenv", "operator", "worker")))
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stderr is not None
        url = process.stdout.readline().strip()  # printed once it is ready
        assert url == f"http://127.0.0.1:{port}", process.stderr.read() if process.poll() is not None else url

        def scraped() -> dict[str, Any] | None:
            targets = _get(f"{url}/api/v1/targets?state=active")["data"]["activeTargets"]
            ours = [t for t in targets if t["labels"].get("pod") == pod and t["health"] == "up"]
            return ours[0] if ours else None

        target = wait_until(scraped, timeout=120, what=f"Pod {namespace}/{pod} scraped and up", interval=1)
        assert target["labels"]["namespace"] == namespace
        assert target["labels"]["job"] == "jobqueue-worker"  # the PodMonitor's relabelling
        assert target["labels"]["container"] == "worker"
        query = f'h6_local_prometheus_probe_total{{namespace="{namespace}",pod="{pod}"}}'
        result = wait_until(
            lambda: _get(f"{url}/api/v1/query?{urllib.parse.urlencode({'query': query})}")["data"]["result"],
            timeout=60,
            what="the probe's series",
            interval=1,
        )
        assert float(result[0]["value"][1]) == 1.0
    finally:
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr
    assert "Prometheus stopped" in stderr
    wait_until(lambda: not _answers(url), timeout=30, what="Prometheus gone after Ctrl-C")


def _answers(url: str) -> bool:
    try:
        urllib.request.urlopen(f"{url}/-/ready", timeout=2).close()
    except OSError:
        return False
    return True
