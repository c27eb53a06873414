"""Worker Pods spread over nodes by default: the three-node local cluster the three-node modules share
(tests/conftest.py `three_nodes`; the operator and namespace fixtures are the lost-node module's), the
operator on the host, the managed Redis and `jobqueue-worker` processes in Pods.

- Three workers of one queue land on three nodes, so one lost or drained node takes one of them.
- `kubectl drain` of a node holding both workers of a queue evicts them one at a time (its budget: one):
  the queue never has fewer than one Ready worker during the drain, and both end up on other nodes.
- `kubectl drain` of the node of a queue's only worker (`minReplicas: 1`): its budget (`minAvailable: 1`)
  refuses the eviction until the operator's drain surge has a replacement Ready on another node, so the queue
  is never without a Ready worker, and the surge ends once the old worker is gone."""

from __future__ import annotations

import threading
import time
from typing import Any

from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.operator_process import HostOperator
from jobqueue_devenv.waiting import wait_until
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, jobqueue_manifest
from tests.integration.operator.test_lost_node import (  # noqa: F401  # fixtures
    api,
    kubectl,
    namespace,
    operator,
    ready_workers,
)


def test_a_queues_workers_spread_over_the_nodes(api: client.ApiClient, namespace: str, operator: HostOperator) -> None:  # noqa: F811
    core, custom = client.CoreV1Api(api), client.CustomObjectsApi(api)
    name = "spread"
    queue = {"name": "work", "concurrency": 1, "pool": "solo", "replicas": 3}
    body = jobqueue_manifest(name, [queue], broker={"managed": {"persistence": {"enabled": False}}})
    custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body)
    selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"
    workers = wait_until(ready_workers(core, namespace, selector, 3), timeout=180, what="three worker Pods Ready")
    spread = workers[0].spec.topology_spread_constraints
    assert [(c.topology_key, c.max_skew, c.when_unsatisfiable) for c in spread] == [
        ("kubernetes.io/hostname", 1, "ScheduleAnyway")
    ]
    assert len({pod.spec.node_name for pod in workers}) == 3


def test_a_drain_takes_a_queues_workers_one_at_a_time(
    three_nodes: cluster.ClusterState,
    api: client.ApiClient,  # noqa: F811
    namespace: str,  # noqa: F811
    operator: HostOperator,  # noqa: F811
) -> None:
    core = client.CoreV1Api(api)
    name = "drained"
    selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"
    queue = {"name": "work", "concurrency": 1, "pool": "solo", "replicas": 2}
    target = _workers_on_one_node(three_nodes, api, namespace, name, queue, 2)  # so its drain meets the budget

    fewest = _drain(three_nodes, core, namespace, selector, target)
    after = wait_until(ready_workers(core, namespace, selector, 2, target), timeout=120, what="two workers elsewhere")
    assert target not in {pod.spec.node_name for pod in after}
    assert fewest >= 1  # the budget kept one serving while the other moved


def _workers_on_one_node(
    state: cluster.ClusterState, api_client: client.ApiClient, where: str, name: str, queue: dict[str, Any], count: int
) -> str:
    """Create the JobQueue `name` of `queue` while every node but the first is cordoned, so its `count`
    workers all start there; uncordon the others; the node they run on."""
    core, custom = client.CoreV1Api(api_client), client.CustomObjectsApi(api_client)
    selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"
    target, *others = state.node_names
    for node in others:
        kubectl(state, "cordon", node)
    try:
        body = jobqueue_manifest(name, [queue], broker={"managed": {"persistence": {"enabled": False}}})
        custom.create_namespaced_custom_object(GROUP, VERSION, where, PLURAL, body)
        before = wait_until(ready_workers(core, where, selector, count), timeout=180, what=f"{count} worker(s) Ready")
    finally:
        for node in others:
            kubectl(state, "uncordon", node)
    assert {pod.spec.node_name for pod in before} == {target}
    return target


def _drain(state: cluster.ClusterState, core: client.CoreV1Api, where: str, selector: str, node: str) -> int:
    """`kubectl drain` the queue's workers off `node` (then uncordon it); the fewest Ready workers seen during
    the drain (sampled every 0.2 s)."""
    fewest = [_ready_count(core, where, selector)]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            fewest[0] = min(fewest[0], _ready_count(core, where, selector))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        kubectl(state, "drain", node, "--pod-selector", selector, "--timeout=300s", "--delete-emptydir-data")
    finally:
        done.set()
        sampler.join(10)
        kubectl(state, "uncordon", node)
    return fewest[0]


def _ready_count(core: client.CoreV1Api, where: str, selector: str) -> int:
    """Worker Pods Ready and not marked for deletion (what the budget counts as healthy)."""
    pods = core.list_namespaced_pod(where, label_selector=selector).items
    return sum(
        1
        for p in pods
        if not p.metadata.deletion_timestamp
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    )


def test_a_drain_of_a_queues_only_worker_waits_for_its_replacement(
    three_nodes: cluster.ClusterState,
    api: client.ApiClient,  # noqa: F811
    namespace: str,  # noqa: F811
    operator: HostOperator,  # noqa: F811
) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    name = "alone"
    selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"
    queue = {"name": "work", "concurrency": 1, "pool": "solo", "autoscaling": {"minReplicas": 1, "maxReplicas": 3}}
    target = _workers_on_one_node(three_nodes, api, namespace, name, queue, 1)

    fewest = _drain(three_nodes, core, namespace, selector, target)
    after = wait_until(ready_workers(core, namespace, selector, 1, target), timeout=120, what="the worker elsewhere")
    assert after[0].spec.node_name != target
    assert fewest >= 1  # the budget held the eviction until the surge's replacement was Ready
    deployment = next(iter(apps.list_namespaced_deployment(namespace, label_selector=selector).items))
    wait_until(
        lambda: apps.read_namespaced_deployment(deployment.metadata.name, namespace).spec.replicas == 1,
        timeout=180,
        what="the surge over: back to one worker",
    )
