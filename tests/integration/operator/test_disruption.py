"""Drains and disruptions, for real: the operator on the host, the local cluster's API server (its eviction
API honours PodDisruptionBudgets), `jobqueue-worker` processes in Pods under the node agent (SIGTERM, the
grace period, SIGKILL as a kubelet does them) and the managed Redis Pod, reached from the host at its IP.

- Each queue gets a PodDisruptionBudget over its worker Pods; one whose budget allows no disruption refuses
  an eviction with 429, as `kubectl drain` sees it.
- A busy worker evicted through the eviction API: a task that ends within the grace period finishes there,
  once; a longer one is handed back at the worker's deadline (10 s before the kubelet's SIGKILL), long
  before any visibility timeout, and runs to completion on the replacement worker: started twice, done once.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator

import pytest
import redis
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from jobqueue_devenv import cluster
from jobqueue_devenv.operator_process import HostOperator
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker, naming
from jobqueue_operator.build import workers
from jobqueue_worker import producer, records
from tests.conftest import Kubectl
from tests.integration.operator.conftest import apply_jobqueue, hosted_operator_in, jobqueue_manifest

MAX_SHUTDOWN = 25
"""The queue's maxShutdownSeconds: the worker Pods' grace period (its time limit plus 30 s is longer)."""
DEADLINE = MAX_SHUTDOWN - workers.HAND_BACK_SECONDS
SHORT_TASK = 4
LONG_TASK = 40


@pytest.fixture(scope="module")
def operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostOperator]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory) as running:
        yield running


def _broker_url(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The managed Redis at its Pod IP, with the password from its Secret."""
    pod = wait_until(
        lambda: (p := core.read_namespaced_pod(f"{name}-redis-0", namespace)).status.pod_ip and p,
        timeout=60,
        what="the Redis Pod's IP",
    )
    secret = core.read_namespaced_secret(f"{name}-redis-auth", namespace)
    password = base64.b64decode(secret.data["password"]).decode()
    return f"redis://:{password}@{pod.status.pod_ip}:6379/0"


def _ready_pods(core: client.CoreV1Api, namespace: str, jobqueue: str, queue: str) -> list[client.V1Pod]:
    selector = f"{naming.JOBQUEUE_LABEL}={jobqueue},{naming.QUEUE_LABEL}={naming.queue_slug(queue)}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return [
        pod
        for pod in pods
        if pod.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
    ]


def _evict(core: client.CoreV1Api, namespace: str, pod: str) -> int:
    """POST pods/eviction, as `kubectl drain` does; the HTTP status (201 evicted, 429 refused by a budget)."""
    body = client.V1Eviction(metadata=client.V1ObjectMeta(name=pod, namespace=namespace))
    try:
        core.create_namespaced_pod_eviction(pod, namespace, body)
    except ApiException as exc:
        return int(exc.status)
    return 201


def _budget(api: client.ApiClient, namespace: str, name: str) -> client.V1PodDisruptionBudget:
    found: client.V1PodDisruptionBudget = client.PolicyV1Api(api).read_namespaced_pod_disruption_budget(name, namespace)
    return found


@pytest.mark.usefixtures("operator")
def test_a_budget_per_queue_and_the_eviction_api_refuses_what_it_does_not_allow(
    kubectl: Kubectl, api_client: client.ApiClient, core: client.CoreV1Api, operator_namespace: str
) -> None:
    ns, name = operator_namespace, f"pdb-{uuid.uuid4().hex[:6]}"
    queues = [{"name": "held", "replicas": 1, "disruption": {"maxUnavailable": 0}}, {"name": "free", "replicas": 0}]
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, queues))
    deployment = naming.worker_deployment(name, "held")
    budget = wait_until(lambda: _budget(api_client, ns, deployment), timeout=60, what="the held queue's budget")
    live = client.AppsV1Api(api_client).read_namespaced_deployment(deployment, ns)
    assert budget.spec.max_unavailable == 0
    assert budget.spec.selector.match_labels == live.spec.selector.match_labels
    assert budget.spec.unhealthy_pod_eviction_policy == "AlwaysAllow"
    assert budget.metadata.owner_references[0].kind == "JobQueue"
    free = wait_until(lambda: _budget(api_client, ns, naming.worker_deployment(name, "free")), timeout=60, what="free")
    assert free.spec.max_unavailable == 1  # the default

    (pod,) = wait_until(lambda: _ready_pods(core, ns, name, "held"), timeout=120, what="the held queue's worker Ready")
    wait_until(
        lambda: (status := _budget(api_client, ns, deployment).status) and status.current_healthy == 1,
        timeout=60,
        what="the budget counting the Ready worker",
    )
    assert _evict(core, ns, pod.metadata.name) == 429  # a drain would wait here
    assert core.read_namespaced_pod(pod.metadata.name, ns).metadata.deletion_timestamp is None

    queues[0]["disruption"] = {"maxUnavailable": 1}
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, queues))
    wait_until(lambda: _budget(api_client, ns, deployment).spec.max_unavailable == 1, timeout=60, what="updated")
    wait_until(
        lambda: (status := _budget(api_client, ns, deployment).status) and status.disruptions_allowed == 1,
        timeout=60,
        what="the budget allowing one disruption",
    )
    assert _evict(core, ns, pod.metadata.name) == 201


@pytest.mark.usefixtures("operator")
def test_an_evicted_busy_worker_finishes_short_tasks_and_hands_long_ones_back_at_its_deadline(
    kubectl: Kubectl, core: client.CoreV1Api, operator_namespace: str
) -> None:
    ns, name, queue = operator_namespace, f"drain-{uuid.uuid4().hex[:6]}", "busy"
    queues = [
        {
            "name": queue,
            "replicas": 1,
            "concurrency": 2,
            "timeLimitSeconds": LONG_TASK + 30,
            "maxShutdownSeconds": MAX_SHUTDOWN,
        }
    ]
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, queues))
    (pod,) = wait_until(lambda: _ready_pods(core, ns, name, queue), timeout=120, what="the worker Ready")
    assert pod.spec.termination_grace_period_seconds == MAX_SHUTDOWN
    redis_url = _broker_url(core, ns, name)

    sender = producer.producer_app(redis_url)
    store = redis.Redis.from_url(redis_url)
    run = uuid.uuid4().hex
    try:
        (short,) = producer.send(sender, queue, "sleep", 1, run_id=run, kwargs={"seconds": SHORT_TASK})
        (long,) = producer.send(sender, queue, "sleep", 1, run_id=run, kwargs={"seconds": LONG_TASK})
        wait_until(lambda: len(records.read(store, run, records.STARTED)) == 2, timeout=60, what="both tasks started")
        evicted_at = time.monotonic()
        assert _evict(core, ns, pod.metadata.name) == 201

        wait_until(lambda: short.id in records.read(store, run, records.DONE), timeout=60, what="the short task done")
        # The long one goes back at the deadline and runs again on the replacement (started a second time).
        wait_until(
            lambda: records.read(store, run, records.STARTED).get(long.id) == 2,
            timeout=DEADLINE + 90,
            what="the long task handed back and started again",
        )
        restarted_after = time.monotonic() - evicted_at
        assert restarted_after >= DEADLINE  # not cut before its deadline
        old = [
            i for i in broker.list_incarnations(redis_url, queues=[queue]) if i.registration.pod == pod.metadata.name
        ]
        assert old == []  # it unregistered on its way out: the operator restores nothing twice
        wait_until(
            lambda: long.id in records.read(store, run, records.DONE), timeout=LONG_TASK + 60, what="the long task done"
        )
        assert records.read(store, run, records.DONE) == {short.id: 1, long.id: 1}
        assert records.read(store, run, records.STARTED) == {short.id: 1, long.id: 2}
        print(f"long task started again {restarted_after:.1f}s after the eviction (deadline {DEADLINE}s)")
    finally:
        sender.close()
        store.close()
