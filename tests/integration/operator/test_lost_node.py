"""A lost node, for real: a three-node local cluster whose nodes lose power (`jobqueue_devenv.nodes.kill`:
the node agent and every process of its Pods SIGKILLed at once, its Pods' addresses silent, nothing told to
the API server), the operator on the host (it survives), a managed Redis and `jobqueue-worker` processes in
Pods on the nodes.

- A busy worker's node dies: its task runs again on another worker long before kombu's visibility timeout
  (an hour), the `WorkerLost` Event names the node, and its Pod is deleted so that its ReplicaSet replaces it.
- The managed Redis's node dies: `BrokerReady` says `BrokerNodeLost` (naming the node and the step) with
  one Warning Event, and clears once the node is back.

The three-node cluster is the one the three-node modules share, one after the other (tests/conftest.py
`three_nodes`; killing nodes of the session's cluster would break other tests); killed nodes are started
again.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client, config

from jobqueue_devenv import binaries, cluster, demo, nodes
from jobqueue_devenv.deployer import condition, pod_report
from jobqueue_devenv.operator_process import HostOperator
from jobqueue_devenv.paths import CRD_FILE
from jobqueue_devenv.waiting import TimedOut, wait_until
from jobqueue_operator import broker
from jobqueue_worker import producer, records
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in, jobqueue_manifest

TASK_SECONDS = 20
"""Long enough that both workers are still busy when the node dies and the restore happens."""


@pytest.fixture(scope="module")
def api(three_nodes: cluster.ClusterState) -> client.ApiClient:
    return config.new_client_from_config(config_file=three_nodes.kubeconfig)


def kubectl(state: cluster.ClusterState, *args: str) -> str:
    env = dict(os.environ, KUBECONFIG=state.kubeconfig)
    done = subprocess.run([str(binaries.find().kubectl), *args], env=env, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def namespace(three_nodes: cluster.ClusterState, api: client.ApiClient, stand_in_images: None) -> Iterator[str]:
    kubectl(three_nodes, "apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    wait_until(lambda: kubectl(three_nodes, "get", "jobqueues", "-A") is not None, timeout=60, what="jq served")
    core = client.CoreV1Api(api)
    name = f"lostnode-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=60, what="default SA")
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(
    three_nodes: cluster.ClusterState, namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostOperator]:
    """The operator on the host, with its default tick (5 s) and resync (30 s): the times are the real ones."""
    with hosted_operator_in(three_nodes, namespace, tmp_path_factory, resync=None) as running:
        yield running


@pytest.fixture
def restore_nodes(three_nodes: cluster.ClusterState) -> Iterator[None]:
    """Every node killed by the test is started again afterwards (empty, as after a reboot)."""
    yield
    directory = Path(three_nodes.directory)
    for name in nodes.names(directory):
        if not nodes.agent_running(directory, name):
            nodes.start(directory, name)


def jobqueue(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any]:
    body: dict[str, Any] = client.CustomObjectsApi(api).get_namespaced_custom_object(
        GROUP, VERSION, namespace, PLURAL, name
    )
    return body


def broker_ready(api: client.ApiClient, namespace: str, name: str) -> dict[str, Any] | None:
    return condition(jobqueue(api, namespace, name), "BrokerReady")


def redis_pod(api: client.ApiClient, namespace: str, name: str) -> client.V1Pod:
    """The managed Redis Pod, once it runs and Redis is ready."""

    def ready() -> client.V1Pod | None:
        found = broker_ready(api, namespace, name)
        pod = client.CoreV1Api(api).read_namespaced_pod(f"{name}-redis-0", namespace)
        return pod if found is not None and found["status"] == "True" and pod.status.pod_ip else None

    found: client.V1Pod = wait_until(ready, timeout=120, what=f"{name}'s Redis ready")
    return found


def redis_url(api: client.ApiClient, namespace: str, name: str, pod: client.V1Pod) -> str:
    secret = client.CoreV1Api(api).read_namespaced_secret(f"{name}-redis-auth", namespace)
    password = base64.b64decode(secret.data["password"]).decode()
    return f"redis://:{password}@{pod.status.pod_ip}:6379/0"


def events(api: client.ApiClient, namespace: str, jobqueue_name: str, reason: str) -> list[client.CoreV1Event]:
    selector = f"involvedObject.name={jobqueue_name},reason={reason}"
    listed: list[client.CoreV1Event] = (
        client.CoreV1Api(api).list_namespaced_event(namespace, field_selector=selector).items
    )
    return listed


def redelivered(operator: HostOperator, reason: str) -> float:
    """The sum of jobqueue_tasks_redelivered_total{reason=...} on the operator's /metrics."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5).read().decode()
    pattern = re.compile(r'^jobqueue_tasks_redelivered_total\{[^}]*reason="' + reason + r'"[^}]*\} (\S+)$', re.M)
    return sum(float(value) for value in pattern.findall(text))


def test_a_busy_workers_tasks_run_again_soon_after_its_node_dies_and_its_pod_is_replaced(
    three_nodes: cluster.ClusterState,
    api: client.ApiClient,
    namespace: str,
    operator: HostOperator,
    restore_nodes: None,
) -> None:
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = "lost"
    queue = {"name": "work", "concurrency": 1, "pool": "solo", "replicas": 0, "timeLimitSeconds": 120}
    body = jobqueue_manifest(name, [queue], broker={"managed": {"persistence": {"enabled": False}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    on_redis = redis_pod(api, namespace, name)
    # The workers go to the two nodes Redis is not on: the node killed below takes a worker, not the broker.
    kubectl(three_nodes, "cordon", on_redis.spec.node_name)
    try:
        patch = {"spec": {"queues": [{**queue, "replicas": 2}]}}
        custom.patch_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name, patch)
        selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"

        workers = wait_until(ready_workers(core, namespace, selector, 2), timeout=120, what="two worker Pods Ready")
    finally:
        kubectl(three_nodes, "uncordon", on_redis.spec.node_name)
    assert on_redis.spec.node_name not in {p.spec.node_name for p in workers}

    url = redis_url(api, namespace, name, on_redis)
    reader = redis_client(url)
    app = producer.producer_app(url)
    run = uuid.uuid4().hex
    sent: list[str] = []
    try:
        for count in (1, 2):  # one at a time: each goes to an idle worker
            (task,) = producer.send(app, "work", "sleep", 1, run_id=run, kwargs={"seconds": TASK_SECONDS})
            sent.append(task.id)
            wait_until(started(reader, run, count), timeout=60, what=f"{count} tasks started")
    finally:
        app.close()
    busy = [found for found in broker.list_incarnations(url, queues=["work"]) if found.held]
    assert len(busy) == 2, busy
    doomed = busy[0].registration.pod
    node = core.read_namespaced_pod(doomed, namespace).spec.node_name

    nodes.kill(Path(three_nodes.directory), node)
    killed_at = time.monotonic()
    # The restore's Event is posted right after the task went back to the head of its queue.
    (lost,) = wait_until(lambda: events(api, namespace, name, "WorkerLost"), timeout=120, what="a WorkerLost Event")
    back_after = time.monotonic() - killed_at
    assert lost.type == "Warning"
    assert f"worker Pod {doomed} of queue work is gone (node_lost: node {node}" in lost.message
    assert "1 tasks it held put back" in lost.message
    started_twice = wait_until(
        lambda: [task for task, times in records.read(reader, run, records.STARTED).items() if times == 2],
        timeout=120,
        what="the dead worker's task started again",
    )
    again_after = time.monotonic() - killed_at
    assert len(started_twice) == 1
    deleted = wait_until(
        lambda: core.read_namespaced_pod(doomed, namespace).metadata.deletion_timestamp,
        timeout=60,
        what=f"{doomed} marked for deletion",
    )
    assert deleted is not None
    assert redelivered(operator, "node_lost") == 1

    def both_done() -> dict[str, int] | None:
        found = records.read(reader, run, records.DONE)
        return found if len(found) == 2 else None

    done = wait_until(both_done, timeout=120, what="both tasks done")
    assert done == dict.fromkeys(sent, 1)
    # The ReplicaSet replaced the lost Pod: two Ready workers again, none on the dead node.
    replaced = wait_until(ready_workers(core, namespace, selector, 2, node), timeout=180, what="a replacement")
    replaced_after = time.monotonic() - killed_at
    assert doomed not in {p.metadata.name for p in replaced}
    print(
        f"{node} killed: task back on its queue after {back_after:.1f}s, started again after {again_after:.1f}s, "
        f"two workers Ready after {replaced_after:.1f}s"
    )


def ready_workers(
    core: client.CoreV1Api, namespace: str, selector: str, count: int, dead: str = ""
) -> Callable[[], list[client.V1Pod] | None]:
    """A check for `count` Ready worker Pods not marked for deletion, none on the node `dead`."""

    def check() -> list[client.V1Pod] | None:
        pods = core.list_namespaced_pod(namespace, label_selector=selector).items
        ready = [
            p
            for p in pods
            if p.spec.node_name != dead
            and not p.metadata.deletion_timestamp
            and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
        ]
        return ready if len(ready) == count else None

    return check


def started(reader: redis.Redis, run: str, count: int) -> Callable[[], bool]:
    return lambda: len(records.read(reader, run, records.STARTED)) == count


def redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5)


def test_a_managed_redis_on_a_dead_node_is_told_with_the_step_and_clears_when_the_node_is_back(
    three_nodes: cluster.ClusterState,
    api: client.ApiClient,
    namespace: str,
    operator: HostOperator,
    restore_nodes: None,
) -> None:
    custom = client.CustomObjectsApi(api)
    name = "lostbroker"
    queue = {"name": "work", "concurrency": 1, "pool": "solo", "replicas": 0}
    body = jobqueue_manifest(name, [queue], broker={"managed": {"persistence": {"enabled": False}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    node = redis_pod(api, namespace, name).spec.node_name

    nodes.kill(Path(three_nodes.directory), node)
    killed_at = time.monotonic()

    def told() -> dict[str, Any] | None:
        found = broker_ready(api, namespace, name)
        return found if found is not None and found["reason"] == "BrokerNodeLost" else None

    said = wait_until(told, timeout=120, what="BrokerReady BrokerNodeLost")
    told_after = time.monotonic() - killed_at
    assert said["status"] == "False"
    assert f"Redis Pod {name}-redis-0 is on node {node}, which is gone" in said["message"]
    assert f"kubectl taint nodes {node} node.kubernetes.io/out-of-service=nodeshutdown:NoExecute" in said["message"]
    ready = condition(jobqueue(api, namespace, name), "Ready")
    assert ready is not None
    assert ready["status"] == "False"
    (event,) = wait_until(lambda: events(api, namespace, name, "BrokerNodeLost"), timeout=30, what="the Event")
    assert event.type == "Warning"
    assert node in event.message

    nodes.start(Path(three_nodes.directory), node)  # back, empty: its agent starts the Redis Pod bound to it
    try:
        back = wait_until(
            lambda: (found := broker_ready(api, namespace, name)) and found["status"] == "True" and found,
            timeout=180,
            what="BrokerReady True again",
        )
    except TimedOut as exc:
        story = pod_report(demo.Kube.for_cluster(three_nodes), namespace)
        raise TimedOut(f"{exc}; BrokerReady {broker_ready(api, namespace, name)}\n{story}") from None
    assert back["reason"] == "RedisReady"
    assert len(events(api, namespace, name, "BrokerNodeLost")) == 1  # one Event for the cause
    print(f"node {node} killed: BrokerNodeLost after {told_after:.1f}s")
