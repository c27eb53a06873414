"""Queue names as Celery apps write them (issue 19, point 6): `high_priority`, `video.transcode`, `CamelCase`.

The API server accepts them; each gets its worker Deployment under a derived Kubernetes name; a plain Celery
producer (no project code) sends to each real name and the task runs; the status and the depth metrics use
the real names; and a queue removed from the spec while it holds tasks drains under its real name.

The operator runs on the host through `python -m jobqueue_devenv exec` (it reaches `<jq>-redis.<ns>.svc`);
the node agent runs the managed Redis and `jobqueue-worker` with the built-in demo app; the producer reaches
the Redis Pod at its IP.
"""

from __future__ import annotations

import base64
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from celery import Celery
from celery.result import AsyncResult
from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.operator_process import HostOperator
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    GROUP,
    PLURAL,
    VERSION,
    apply_jobqueue,
    hosted_operator_in,
    jobqueue_manifest,
)

NAME = "names"
QUEUES = ("high_priority", "video.transcode", "CamelCase")
REMOVED = "video.transcode"
SLEEP = "jobqueue_worker.tasks.sleep"
SHORT = {"concurrency": 1, "pool": "solo", "timeLimitSeconds": 10}


@pytest.fixture(scope="module")
def operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostOperator]:
    """`jobqueue-operator` with a 1 s autoscaler tick, resolving Service names like a Pod."""
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory, tick=1) as running:
        yield running


def _document(queues: dict[str, int]) -> dict[str, Any]:
    """The JobQueue with `queues` (real name -> replicas), on a managed Redis without a volume."""
    specs = [{"name": name, "replicas": replicas, **SHORT} for name, replicas in queues.items()]
    return jobqueue_manifest(NAME, specs, broker={"managed": {"persistence": {"enabled": False}}})


def _body(custom: client.CustomObjectsApi, namespace: str) -> dict[str, Any]:
    body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    return body


def _depths(operator: HostOperator, namespace: str) -> dict[str, float]:
    """`jobqueue_queue_depth{state="ready"}` of this JobQueue, by the `queue` label."""
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=2) as reply:
        text = reply.read().decode()
    return {
        sample.labels["queue"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobqueue_queue_depth"
        and sample.labels.get("state") == "ready"
        and (sample.labels.get("namespace"), sample.labels.get("jobqueue")) == (namespace, NAME)
    }


def _status_ready(custom: client.CustomObjectsApi, namespace: str) -> dict[str, int | None]:
    """`status.queues[].ready` by queue name."""
    return {q["name"]: q.get("ready") for q in (_body(custom, namespace).get("status") or {}).get("queues") or []}


def _producer(core: client.CoreV1Api, namespace: str) -> Celery:
    """A plain Celery app, as an unchanged producer has it: the broker URL and the same Redis for results."""
    pod = wait_until(
        lambda: (p := core.read_namespaced_pod(naming.redis(NAME) + "-0", namespace)).status.pod_ip and p,
        timeout=90,
        what="the Redis Pod's IP",
    )
    secret = core.read_namespaced_secret(naming.redis_secret(NAME), namespace)
    password = base64.b64decode(secret.data[naming.PASSWORD_KEY]).decode()
    url = f"redis://:{password}@{pod.status.pod_ip}:6379/0"
    return Celery("plain-producer", broker=url, backend=url)


def _events(core: client.CoreV1Api, namespace: str, reason: str) -> list[str]:
    listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={NAME},reason={reason}")
    return [e.message for e in listed.items]


def test_celery_queue_names_are_accepted_served_reported_and_drained_under_their_real_names(
    operator: HostOperator,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    apply_jobqueue(kubectl, ns, _document(dict.fromkeys(QUEUES, 1)))  # today's schema refused all three names

    # Each queue has its worker Deployment under the derived name; the label holds the slug (selectors
    # work), the annotation and the worker's env the real name.
    expected = {naming.worker_deployment(NAME, queue): queue for queue in QUEUES}
    assert len(set(expected)) == len(QUEUES)
    found = wait_until(
        lambda: (
            (d := {x.metadata.name: x for x in apps.list_namespaced_deployment(ns).items}).keys() >= expected.keys()
            and d
        ),
        timeout=60,
        what=f"the worker Deployments {sorted(expected)}",
    )
    for name, queue in expected.items():
        deployment = found[name]
        assert deployment.metadata.labels[naming.QUEUE_LABEL] == naming.queue_slug(queue)
        assert deployment.metadata.annotations[naming.QUEUE_NAME_ANNOTATION] == queue
        assert deployment.spec.template.metadata.annotations[naming.QUEUE_NAME_ANNOTATION] == queue
        env = {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}
        assert env["JOBQUEUE_QUEUE"] == queue

    def ready() -> bool:
        found = condition(_body(custom, ns), "Ready")
        return found is not None and found["status"] == "True"

    wait_until(ready, timeout=180, what="Ready=True with a worker on each queue")

    # A plain Celery producer sends to each real name; each task runs (its worker consumes that list).
    app = _producer(core, ns)
    results = {queue: app.send_task(SLEEP, kwargs={"seconds": 0.1}, queue=queue) for queue in QUEUES}
    for queue, result in results.items():
        assert result.get(timeout=90) == 0.1, queue

    # The status and the depth metrics are keyed by the real names.
    wait_until(lambda: _status_ready(custom, ns).keys() == set(QUEUES), timeout=30, what="status by real names")
    wait_until(lambda: _depths(operator, ns).keys() == set(QUEUES), timeout=30, what="depth series by real names")

    # With no worker on video.transcode, 3 tasks wait in it: counted under its real name.
    apply_jobqueue(kubectl, ns, _document({**dict.fromkeys(QUEUES, 1), REMOVED: 0}))
    selector = naming.queue_selector(NAME, REMOVED)
    wait_until(lambda: not core.list_namespaced_pod(ns, label_selector=selector).items, timeout=90, what="no worker")
    waiting: list[AsyncResult] = [app.send_task(SLEEP, kwargs={"seconds": 5}, queue=REMOVED) for _ in range(3)]
    wait_until(lambda: _depths(operator, ns).get(REMOVED) == 3, timeout=30, what="depth 3 under the real name")
    wait_until(lambda: _status_ready(custom, ns).get(REMOVED) == 3, timeout=30, what="status ready 3")

    # Removed from the spec while it holds them: a worker drains it under its real name, then it goes.
    apply_jobqueue(kubectl, ns, _document({queue: 1 for queue in QUEUES if queue != REMOVED}))
    gone = naming.worker_deployment(NAME, REMOVED)

    def draining() -> bool:
        entries = (_body(custom, ns).get("status") or {}).get("drainingQueues") or []
        return {"name": REMOVED, "deployment": gone} in [{k: e.get(k) for k in ("name", "deployment")} for e in entries]

    wait_until(draining, timeout=30, what=f"status.drainingQueues naming {REMOVED}")  # 15 s of tasks: seen
    wait_until(
        lambda: any(f"queue {REMOVED} left the spec but still holds" in m for m in _events(core, ns, "QueueDraining")),
        timeout=30,
        what="a QueueDraining Event with the real name",
    )
    for result in waiting:
        assert result.get(timeout=120) == 5
    wait_until(
        lambda: gone not in {d.metadata.name for d in apps.list_namespaced_deployment(ns).items},
        timeout=60,
        what=f"{gone} deleted once drained",
    )
    wait_until(
        lambda: any(f"queue {REMOVED} left the spec and is empty" in m for m in _events(core, ns, "QueueDrained")),
        timeout=30,
        what="a QueueDrained Event with the real name",
    )
    assert REMOVED not in {q["name"] for q in (_body(custom, ns).get("status") or {}).get("unservedQueues") or []}

    kubectl("delete", "jq", "-n", ns, NAME, "--wait=true")
    wait_until(
        lambda: not apps.list_namespaced_deployment(ns, label_selector=naming.children_selector(NAME)).items,
        timeout=90,
        what="the JobQueue's Deployments deleted",
    )
