"""The oldest waiting task's age for an unchanged producer, on the real local cluster: a plain Celery app
(nothing of this project imported, in a process of its own) sends to a paused latency-mode queue at zero
workers; the operator exports a growing age with its source, `first-seen`, on /metrics and in the status;
resumed, the queue scales up and drains, and the age is 0 again.

The operator runs through `python -m jobqueue_devenv exec` (it reaches `<jq>-redis.<ns>.svc` like a Pod);
the producer reaches the Redis Pod at its IP.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in, jobqueue_manifest

NAME, QUEUE = "aging", "work"
PAUSE = "jobqueue.dev/autoscaling-paused"
PRODUCER = """
import sys
from celery import Celery

app = Celery("plain", broker=sys.argv[1])
for _ in range(3):
    app.send_task("jobqueue_worker.tasks.noop", queue=sys.argv[2])
"""
"""An unchanged producer: plain Celery; its messages carry no send time."""


@pytest.fixture(scope="module")
def metrics_url(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """`jobqueue-operator` with a 1 s tick, through devenv exec; yields its /metrics URL."""
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory, tick=1) as running:
        yield f"http://127.0.0.1:{running.metrics_port}/metrics"


def _samples(url: str, name: str, namespace: str) -> dict[tuple[tuple[str, str], ...], float]:
    with urllib.request.urlopen(url, timeout=2) as reply:
        text = reply.read().decode()
    return {
        tuple(sorted(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name and s.labels.get("namespace") == namespace and s.labels.get("jobqueue") == NAME
    }


def _age(url: str, namespace: str) -> tuple[float, list[str]] | None:
    """(the exported age, the sources said for it); None before the queue is measured."""
    ages = _samples(url, "jobqueue_queue_oldest_task_age_seconds", namespace)
    sources = _samples(url, "jobqueue_queue_oldest_task_age_source", namespace)
    if not ages:
        return None
    said = sorted(dict(labels)["source"] for labels, value in sources.items() if value)
    return next(iter(ages.values())), said


def _queue_status(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    return dict(((body.get("status") or {}).get("queues") or [{}])[0])


def test_an_unstamped_backlog_gets_a_first_seen_age_that_grows_and_is_0_once_drained(
    metrics_url: str,
    kubectl: Kubectl,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    autoscaling = {"minReplicas": 0, "maxReplicas": 2, "targetWaitSeconds": 20}
    document = jobqueue_manifest(NAME, [{"name": QUEUE, "autoscaling": autoscaling}])
    document["metadata"]["annotations"] = {PAUSE: "true"}  # held at zero workers: the tasks stand
    kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump(document))
    wait_until(lambda: _age(metrics_url, ns) == (0.0, []), timeout=120, what="the empty queue measured")

    pod = wait_until(
        lambda: (p := core.read_namespaced_pod(f"{NAME}-redis-0", ns)).status.pod_ip and p,
        timeout=60,
        what="the Redis Pod's IP",
    )
    password = base64.b64decode(core.read_namespaced_secret(f"{NAME}-redis-auth", ns).data["password"]).decode()
    url = f"redis://:{password}@{pod.status.pod_ip}:6379/0"
    subprocess.run([sys.executable, "-c", PRODUCER, url, QUEUE], check=True, timeout=60)

    first = wait_until(
        lambda: (found := _age(metrics_url, ns)) and found[0] >= 2 and found,
        timeout=60,
        what="an age for the unstamped tasks",
    )
    assert first[1] == ["first-seen"]
    later = wait_until(
        lambda: (found := _age(metrics_url, ns)) and found[0] >= first[0] + 3 and found,
        timeout=60,
        what="the age growing",
    )
    assert later[1] == ["first-seen"]
    entry = wait_until(
        lambda: (q := _queue_status(custom, ns)).get("oldestTaskAgeSeconds", 0) >= first[0] + 3 and q,
        timeout=30,
        what="the age in the status",
    )
    assert entry["oldestTaskAgeSource"] == "first-seen"
    assert entry["ready"] == 3

    kubectl("annotate", "-n", ns, f"jq/{NAME}", f"{PAUSE}-")  # resumed: latency mode wakes the queue
    wait_until(
        lambda: int(apps.read_namespaced_deployment(f"{NAME}-{QUEUE}-worker", ns).spec.replicas or 0) >= 1,
        timeout=60,
        what="a worker asked for",
    )
    wait_until(lambda: _age(metrics_url, ns) == (0.0, []), timeout=120, what="the queue drained: age 0, no source")
    kubectl("delete", "jq", "-n", ns, NAME)
