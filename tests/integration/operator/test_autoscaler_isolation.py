"""The autoscaler's ticks of different JobQueues do not wait on each other, and its memory survives an
operator restart. Real operator process, real API server, a real redis-server the operator reads (the
workers need not run: what is checked is the replicas the autoscaler writes)."""

from __future__ import annotations

import base64
import contextlib
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from celery import Celery
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.operator_process import HostOperator, host_operator
from jobqueue_devenv.processes import free_port
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION
from tests.integration.worker.conftest import blackhole

pytestmark = pytest.mark.usefixtures("crd")

SLOW_JOBQUEUES = 12
"""More JobQueues with an unanswering broker than the operator has reconcile threads (8)."""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.running(tmp_path_factory.mktemp("redis")) as running:
        yield running


def _secret(core: client.CoreV1Api, namespace: str, name: str, url: str) -> None:
    data = {"url": base64.b64encode(url.encode()).decode()}
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "data": data})


def _jobqueue(name: str, secret: str, autoscaling: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "image": HOST_PROCESS_IMAGE,
            "app": "jobqueue_worker.demo:app",
            "broker": {"external": {"urlSecretRef": {"name": secret, "key": "url"}}},
            "queues": [{"name": "work", "concurrency": 1, "autoscaling": autoscaling}],
        },
    }


def _apply(kubectl: Kubectl, namespace: str, document: dict[str, Any]) -> None:
    kubectl("apply", "--server-side", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))


@contextlib.contextmanager
def _operator(local_cluster: cluster.ClusterState, namespace: str, log: Path) -> Iterator[HostOperator]:
    with host_operator(local_cluster.kubeconfig, namespace, log, args=["--autoscale-seconds", "1"]) as running:
        yield running


def test_jobqueues_with_an_unanswering_broker_do_not_hold_up_another(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    namespace: str,
    server: RedisServer,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    port = free_port()
    with blackhole(port), _operator(local_cluster, namespace, tmp_path / "operator.log"):
        _secret(core, namespace, "slow-url", f"redis://127.0.0.1:{port}/0")
        scaling = {"minReplicas": 0, "maxReplicas": 3}
        for i in range(SLOW_JOBQUEUES):
            _apply(kubectl, namespace, _jobqueue(f"slow{i}", "slow-url", scaling))
        queue = f"work-{uuid.uuid4().hex[:6]}"  # the busy JobQueue's queue, in the shared Redis
        _secret(core, namespace, "busy-url", server.url)
        busy = _jobqueue("busy", "busy-url", scaling)
        busy["spec"]["queues"][0]["name"] = queue
        _apply(kubectl, namespace, busy)
        deployment = f"busy-{queue}-worker"
        wait_until(lambda: apps.read_namespaced_deployment(deployment, namespace), timeout=30, what="busy's workers")
        sender: Celery = producer.producer_app(server.url)
        producer.send(sender, queue, "noop", 3)
        # With a 1 s tick, three waiting tasks are seen and scaled for within a few seconds, while every
        # tick of the slow JobQueues waits out its broker's timeout.
        wait_until(
            lambda: apps.read_namespaced_deployment(deployment, namespace).spec.replicas == 3,
            timeout=10,
            what="busy scaled to 3 next to the slow JobQueues",
        )
        sender.close()


def test_a_restarted_operator_keeps_the_scale_down_window(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    server: RedisServer,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    """Scaled up to 3, then nothing to do: within its 300 s window the autoscaler holds 3. A restarted
    operator does too (today's memory is in the status), instead of scaling straight down."""
    queue = f"work-{uuid.uuid4().hex[:6]}"
    _secret(core, namespace, "keep-url", server.url)
    # The window and the idle time set: the defaults (no window, automatic idle time) would scale down at once.
    window = {"scaleDownStabilizationSeconds": 300, "idleSecondsBeforeZero": 300}
    document = _jobqueue("keep", "keep-url", {"minReplicas": 0, "maxReplicas": 3, **window})
    document["spec"]["queues"][0]["name"] = queue
    deployment = f"keep-{queue}-worker"
    sender: Celery = producer.producer_app(server.url)
    with _operator(local_cluster, namespace, tmp_path / "first.log"):
        _apply(kubectl, namespace, document)
        wait_until(lambda: apps.read_namespaced_deployment(deployment, namespace), timeout=30, what="the workers")
        producer.send(sender, queue, "noop", 3)
        wait_until(lambda: apps.read_namespaced_deployment(deployment, namespace).spec.replicas == 3, timeout=20,
                   what="3 workers")  # fmt: skip
        server.client().delete(queue)  # the tasks are gone (nobody runs them here): the queue is idle

        def held() -> bool:
            body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, "keep")
            entry = (body.get("status") or {}).get("queues", [{}])[0]
            return entry.get("ready") == 0 and bool(entry.get("scaleDownHold"))

        wait_until(held, timeout=20, what="an idle queue with the window in the status")
    sender.close()
    with _operator(local_cluster, namespace, tmp_path / "second.log") as second:
        # Several ticks of the new operator (1 s each), then the replicas are still the window's 3.
        def ticks() -> float:
            with urllib.request.urlopen(f"http://127.0.0.1:{second.metrics_port}/metrics", timeout=2) as reply:
                for line in reply.read().decode().splitlines():
                    if line.startswith("jobqueue_autoscaler_tick_duration_seconds_count"):
                        return float(line.split()[-1])
            return 0.0

        wait_until(lambda: ticks() >= 5, timeout=30, what="five ticks of the restarted operator")
        assert apps.read_namespaced_deployment(deployment, namespace).spec.replicas == 3
