"""The autoscaler end to end: the operator as a real process, the local cluster, the managed Redis Pod,
and worker Pods that run `jobqueue-worker` for real under the node agent; for the Prometheus metric
source, a real Prometheus server scraping a gauge this process serves.

The operator runs through `python -m jobqueue_devenv exec`, so it reaches `<jq>-redis.<ns>.svc` like a
Pod would; the test sends tasks straight to the Redis Pod's IP with `jobqueue_worker.producer`.
"""

from __future__ import annotations

import base64
import math
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery import Celery
from kubernetes import client
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import cluster
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.processes import free_port
from jobqueue_devenv.prometheus_process import RunningPrometheus, running_prometheus
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, apply_jobqueue, hosted_operator_in

PAUSE = "jobqueue.dev/autoscaling-paused"
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class Operator:
    def __init__(self, metrics_port: int, log: Path) -> None:
        self.metrics_port, self.log = metrics_port, log

    def samples(self) -> Samples:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=2) as reply:
            text = reply.read().decode()
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(self, name: str, **labels: str) -> float | None:
        wanted = set(labels.items())
        found = [v for (n, got), v in self.samples().items() if n == name and wanted <= set(got)]
        return sum(found) if found else None


@pytest.fixture(scope="module")
def namespace(operator_namespace: str) -> str:
    """The tests of this module share the namespace their operator watches."""
    return operator_namespace


@pytest.fixture(scope="module")
def operator(
    local_cluster: cluster.ClusterState, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Operator]:
    """`jobqueue-operator` with a 1 s autoscaler tick and its own metrics port, through devenv exec."""
    with hosted_operator_in(local_cluster, namespace, tmp_path_factory, tick=1) as running:
        operator = Operator(running.metrics_port, running.log)
        wait_until(lambda: operator.samples() is not None, timeout=30, what="the operator's /metrics")
        yield operator


def _jobqueue(name: str, autoscaling: dict[str, Any], broker: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "image": HOST_PROCESS_IMAGE,
            "app": "jobqueue_worker.demo:app",
            "broker": broker or {"managed": {}},
            "queues": [{"name": "work", "concurrency": 1, "timeLimitSeconds": 60, "autoscaling": autoscaling}],
        },
    }


def _replicas(apps: client.AppsV1Api, namespace: str, deployment: str) -> int:
    return int(apps.read_namespaced_deployment(deployment, namespace).spec.replicas or 0)


def _queue_status(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    queues = (body.get("status") or {}).get("queues") or [{}]
    return dict(queues[0])


def _events(core: client.CoreV1Api, namespace: str, name: str) -> list[tuple[str, str]]:
    listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}")
    return [(e.reason, e.message) for e in listed.items]


def _producer(core: client.CoreV1Api, namespace: str, name: str) -> Celery:
    """A producer for the managed Redis Pod, reached at its Pod IP from the host."""
    pod = wait_until(
        lambda: (p := core.read_namespaced_pod(f"{name}-redis-0", namespace)).status.pod_ip and p,
        timeout=60,
        what="the Redis Pod's IP",
    )
    secret = core.read_namespaced_secret(f"{name}-redis-auth", namespace)
    password = base64.b64decode(secret.data["password"]).decode()
    return producer.producer_app(f"redis://:{password}@{pod.status.pod_ip}:6379/0")


@pytest.fixture(scope="module")
def scaled(kubectl: Kubectl, core: client.CoreV1Api, namespace: str, operator: Operator) -> Celery:
    """JobQueue "scale": queue "work", 0..3 workers, short windows; its broker ready and measured."""
    autoscaling = {"minReplicas": 0, "maxReplicas": 3, "scaleDownStabilizationSeconds": 3, "idleSecondsBeforeZero": 6}
    apply_jobqueue(kubectl, namespace, _jobqueue("scale", autoscaling))
    labels = {"namespace": namespace, "jobqueue": "scale"}
    wait_until(lambda: operator.value("jobqueue_broker_up", **labels) == 1, timeout=90, what="broker_up 1")
    return _producer(core, namespace, "scale")


def test_series_exist_at_zero_workers(operator: Operator, scaled: Celery, namespace: str) -> None:
    labels = {"namespace": namespace, "jobqueue": "scale", "queue": "work"}
    assert operator.value("jobqueue_workers", **labels, kind="desired") == 0
    assert operator.value("jobqueue_workers", **labels, kind="current") == 0
    assert operator.value("jobqueue_queue_depth", **labels, state="ready") == 0
    assert operator.value("jobqueue_queue_depth", **labels, state="in_flight") == 0
    assert operator.value("jobqueue_queue_oldest_task_age_seconds", **labels) == 0
    assert operator.value("jobqueue_autoscaler_tick_duration_seconds_count") is not None


def test_up_with_the_backlog_kept_while_in_flight_then_down_to_zero(
    operator: Operator,
    scaled: Celery,
    namespace: str,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    kubectl: Kubectl,
) -> None:
    run_id = uuid.uuid4().hex
    producer.send(scaled, "work", "sleep", 4, run_id=run_id, kwargs={"seconds": 12})
    # Up at once, capped at maxReplicas: 4 waiting at 1 per worker asks for 4.
    wait_until(lambda: _replicas(apps, namespace, "scale-work-worker") == 3, timeout=30, what="3 workers")
    row = kubectl("get", "jq", "scale", "-n", namespace).stdout.splitlines()
    assert row[0].split()[:3] == ["NAME", "QUEUES", "BACKLOG"]
    assert row[1].split()[2].isdigit()

    # While tasks run, replicas never drop below what the in-flight tasks occupy (12 s tasks outlast the
    # 6 s idle period and the 3 s window, so a scaler blind to them would have gone down).
    seen: list[tuple[int, int, int]] = []

    def finished() -> bool:
        queue = _queue_status(custom, namespace, "scale")
        seen.append((int(queue.get("ready", -1)), int(queue.get("inFlight", -1)), int(queue["desiredReplicas"])))
        return producer.done_count(scaled, run_id) == 4

    wait_until(finished, timeout=120, what="4 tasks done", interval=0.5)
    running = [(waiting, flying, desired) for waiting, flying, desired in seen if flying > 0]
    assert any(waiting == 0 for waiting, _, _ in running), seen  # there was a "0 waiting, N running" phase
    assert all(desired >= math.ceil(flying / 1) for _, flying, desired in running), seen

    wait_until(lambda: _replicas(apps, namespace, "scale-work-worker") == 0, timeout=60, what="back to 0")
    wait_until(  # the Events are posted after the scale is written: wait for them, do not race them
        lambda: any(r == "ScaledDown" and "IdleToZero" in m for r, m in _events(core, namespace, "scale")),
        timeout=15,
        what="a ScaledDown Event for IdleToZero",
    )
    assert "ScaledUp" in {reason for reason, _ in _events(core, namespace, "scale")}
    labels = {"namespace": namespace, "jobqueue": "scale", "queue": "work"}
    assert (operator.value("jobqueue_scaling_decisions_total", **labels, direction="up") or 0) >= 1
    status = _queue_status(custom, namespace, "scale")
    assert status["lastScaleTime"]
    assert (status["ready"], status["inFlight"]) == (0, 0)


def test_pause_annotation_holds(
    operator: Operator,
    scaled: Celery,
    namespace: str,
    apps: client.AppsV1Api,
    custom: client.CustomObjectsApi,
    kubectl: Kubectl,
) -> None:
    wait_until(lambda: _replicas(apps, namespace, "scale-work-worker") == 0, timeout=60, what="0 workers")
    kubectl("annotate", "--overwrite", "-n", namespace, "jq/scale", f"{PAUSE}=true")
    labels = {"namespace": namespace, "jobqueue": "scale", "queue": "work", "reason": "Paused"}
    wait_until(
        lambda: (operator.value("jobqueue_scaling_decisions_total", **labels) or 0) >= 1, timeout=30, what="paused"
    )
    run_id = uuid.uuid4().hex
    producer.send(scaled, "work", "noop", 2, run_id=run_id)
    paused_before = operator.value("jobqueue_scaling_decisions_total", **labels) or 0
    # Three paused decisions that saw the 2 waiting tasks, and still no worker.
    wait_until(
        lambda: (
            _queue_status(custom, namespace, "scale").get("ready") == 2
            and (operator.value("jobqueue_scaling_decisions_total", **labels) or 0) >= paused_before + 3
        ),
        timeout=30,
        what="paused ticks with tasks waiting",
    )
    assert _replicas(apps, namespace, "scale-work-worker") == 0

    kubectl("annotate", "-n", namespace, "jq/scale", f"{PAUSE}-")
    wait_until(lambda: producer.done_count(scaled, run_id) == 2, timeout=90, what="tasks done after unpause")


def test_broker_down_holds_and_reports_broker_up_zero(
    operator: Operator,
    namespace: str,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    kubectl: Kubectl,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    core.create_namespaced_secret(namespace, {"metadata": {"name": "down-url"}, "stringData": {"url": url}})
    broker = {"external": {"urlSecretRef": {"name": "down-url", "key": "url"}}}
    autoscaling = {"minReplicas": 0, "maxReplicas": 3, "scaleDownStabilizationSeconds": 0, "idleSecondsBeforeZero": 0}
    apply_jobqueue(kubectl, namespace, _jobqueue("down", autoscaling, broker))
    wait_until(lambda: apps.read_namespaced_deployment("down-work-worker", namespace), timeout=30, what="deployment")
    kubectl("scale", "-n", namespace, "deployment/down-work-worker", "--replicas=1")
    labels = {"namespace": namespace, "jobqueue": "down"}
    held = {**labels, "queue": "work", "reason": "MetricsUnavailable"}
    wait_until(lambda: operator.value("jobqueue_broker_up", **labels) == 0, timeout=30, what="broker_up 0")
    start = operator.value("jobqueue_scaling_decisions_total", **held) or 0
    wait_until(
        lambda: (operator.value("jobqueue_scaling_decisions_total", **held) or 0) >= start + 3,
        timeout=30,
        what="three held ticks",
    )
    # With idleSecondsBeforeZero 0 a readable, empty queue would be at 0 by now.
    assert _replicas(apps, namespace, "down-work-worker") == 1
    assert operator.value("jobqueue_queue_depth", **labels) is None  # unknown, not 0

    kubectl("delete", "-n", namespace, "jq/down", "--wait=true")
    wait_until(lambda: operator.value("jobqueue_workers", **labels) is None, timeout=30, what="series gone")
    assert operator.value("jobqueue_broker_up", **labels) is None
    assert operator.value("jobqueue_workers", namespace=namespace, jobqueue="scale") is not None


@pytest.fixture(scope="module")
def pending_jobs() -> Iterator[tuple[Gauge, str]]:
    """A gauge a real Prometheus scrapes from this process: what a user's own backlog metric would be."""
    registry = CollectorRegistry()
    gauge = Gauge("test_pending_jobs", "Jobs waiting, as some exporter reports them", registry=registry)
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    yield gauge, f"127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(timeout=5)


@pytest.fixture(scope="module")
def prometheus(
    pending_jobs: tuple[Gauge, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningPrometheus]:
    with running_prometheus(tmp_path_factory.mktemp("prometheus"), [pending_jobs[1]]) as running:
        wait_until(lambda: running.query("test_pending_jobs")["data"]["result"], timeout=30, what="a first scrape")
        yield running


def test_a_prometheus_query_scales_the_queue_and_a_failing_query_holds_with_a_warning(
    operator: Operator,
    namespace: str,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    kubectl: Kubectl,
    prometheus: RunningPrometheus,
    pending_jobs: tuple[Gauge, str],
) -> None:
    gauge, _ = pending_jobs
    gauge.set(0)
    source = {"serverAddress": prometheus.url, "query": "sum(test_pending_jobs)", "timeoutSeconds": 2}
    autoscaling = {
        "minReplicas": 0,
        "maxReplicas": 4,
        "scaleDownStabilizationSeconds": 0,
        "idleSecondsBeforeZero": 2,
        "prometheus": source,
    }
    apply_jobqueue(kubectl, namespace, _jobqueue("promq", autoscaling))
    labels = {"namespace": namespace, "jobqueue": "promq"}
    wait_until(lambda: operator.value("jobqueue_broker_up", **labels) == 1, timeout=90, what="broker_up 1")

    # Nothing is in the broker's lists: only the query can ask for these workers (1 task per worker).
    gauge.set(3)
    wait_until(lambda: _replicas(apps, namespace, "promq-work-worker") == 3, timeout=30, what="3 workers")
    # Events are posted after the scale: wait for it rather than read once.
    wait_until(
        lambda: any(r == "ScaledUp" and "0 -> 3" in m for r, m in _events(core, namespace, "promq")),
        timeout=15,
        what="a ScaledUp 0 -> 3 Event",
    )
    gauge.set(2)  # scaled down promptly: the window is 0 s and the query shows 2 still waiting
    wait_until(lambda: _replicas(apps, namespace, "promq-work-worker") == 2, timeout=30, what="2 workers")

    # A query that finds no series is not zero: the replicas hold, and the reason is posted once.
    held = {**labels, "queue": "work", "reason": "MetricsUnavailable"}
    start = operator.value("jobqueue_scaling_decisions_total", **held) or 0
    missing = {**autoscaling, "prometheus": {**source, "query": "sum(test_no_such_metric)"}}
    apply_jobqueue(kubectl, namespace, _jobqueue("promq", missing))
    wait_until(
        lambda: (operator.value("jobqueue_scaling_decisions_total", **held) or 0) >= start + 3,
        timeout=30,
        what="three held ticks",
    )
    assert _replicas(apps, namespace, "promq-work-worker") == 2
    warnings = [m for r, m in _events(core, namespace, "promq") if r == "MetricQueryFailed"]
    assert len(warnings) == 1, warnings
    assert "no series" in warnings[0]

    # Fixed, and the gauge at 0: down to zero after the idle period.
    gauge.set(0)
    apply_jobqueue(kubectl, namespace, _jobqueue("promq", autoscaling))
    wait_until(lambda: _replicas(apps, namespace, "promq-work-worker") == 0, timeout=60, what="back to 0")
    kubectl("delete", "-n", namespace, "jq/promq", "--wait=true")
