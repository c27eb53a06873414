"""One Event per cause, its count raised (issue 19, point 11): a crash-looping worker seen by reconcile after
reconcile is ONE `WorkersFailing` Event whose count goes up, and a draining queue whose task count changes
is ONE `QueueDraining` Event whose message follows the count. Before, each came back as a new Event
(20 identical Warnings in 8.5 minutes; one per count change).

The operator runs on the host with a 3 s resync, so a lasting problem is seen by a reconcile every few
seconds; the workers' app does not exist, so they crash-loop and never take a task.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import redis
from kubernetes import client

from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from tests.conftest import Kubectl
from tests.integration.operator.conftest import apply_jobqueue, jobqueue_manifest

MISSING_APP = "no_such_module.celery:app"


def _external_broker(core: client.CoreV1Api, namespace: str, name: str, url: str) -> dict[str, Any]:
    core.create_namespaced_secret(namespace, {"metadata": {"name": name}, "stringData": {"url": url}})
    return {"external": {"urlSecretRef": {"name": name, "key": "url"}}}


def _events(core: client.CoreV1Api, namespace: str, jobqueue: str, reason: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.name={jobqueue},involvedObject.kind=JobQueue,reason={reason}"
    return list(core.list_namespaced_event(namespace, field_selector=selector).items)


def test_a_crash_looping_worker_is_one_workers_failing_event_whose_count_goes_up(
    operator: Path, kubectl: Kubectl, core: client.CoreV1Api, operator_namespace: str, redis_url: str
) -> None:
    ns, name = operator_namespace, "spam"
    queue = f"q{uuid.uuid4().hex[:8]}"
    broker = _external_broker(core, ns, f"{name}-broker", redis_url)
    apply_jobqueue(
        kubectl, ns, jobqueue_manifest(name, [{"name": queue, "replicas": 1}], app=MISSING_APP, broker=broker)
    )

    def raised() -> list[client.CoreV1Event] | None:
        found = _events(core, ns, name, "WorkersFailing")
        return found if any((e.count or 1) >= 3 for e in found) else None

    found = wait_until(raised, timeout=120, what="a WorkersFailing Event with count >= 3")
    assert len(found) == 1, [(e.count, e.message) for e in found]
    assert f"queue {queue}" in found[0].message
    assert found[0].last_timestamp > found[0].first_timestamp
    described = kubectl("describe", "jq", "-n", ns, name).stdout
    assert "WorkersFailing" in described
    kubectl("delete", "jq", "-n", ns, name, "--wait=true")


def test_a_draining_queue_whose_count_changes_is_one_queue_draining_event(
    operator: Path,
    kubectl: Kubectl,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    operator_namespace: str,
    redis_url: str,
) -> None:
    ns, name = operator_namespace, "drain"
    kept, gone = f"k{uuid.uuid4().hex[:8]}", f"g{uuid.uuid4().hex[:8]}"
    broker = _external_broker(core, ns, f"{name}-broker", redis_url)
    document = jobqueue_manifest(
        name, [{"name": kept, "replicas": 0}, {"name": gone, "replicas": 0}], app=MISSING_APP, broker=broker
    )
    apply_jobqueue(kubectl, ns, document)
    deployment = naming.worker_deployment(name, gone)
    wait_until(lambda: apps.read_namespaced_deployment(deployment, ns), timeout=60, what=f"Deployment {deployment}")
    with redis.Redis.from_url(redis_url) as broker_client:
        broker_client.lpush(gone, *[f"task {i}" for i in range(3)])  # the crash-looping workers never take them
        try:
            document["spec"]["queues"] = [{"name": kept, "replicas": 0}]
            apply_jobqueue(kubectl, ns, document)

            def draining(tasks: int) -> list[client.CoreV1Event] | None:
                found = _events(core, ns, name, "QueueDraining")
                return found if any(f"holds {tasks} tasks" in e.message for e in found) else None

            wait_until(lambda: draining(3), timeout=60, what="a QueueDraining Event for 3 tasks")
            broker_client.lpush(gone, "task 3", "task 4")
            found = wait_until(lambda: draining(5), timeout=60, what="the QueueDraining Event saying 5 tasks")
            assert len(found) == 1, [(e.count, e.message) for e in found]
            assert (found[0].count or 1) >= 2
        finally:
            broker_client.delete(gone)
    kubectl("delete", "jq", "-n", ns, name, "--wait=true")
