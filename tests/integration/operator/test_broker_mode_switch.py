"""Switching a running JobQueue's managed broker to high availability is refused, on the real cluster: the
operator says so (BrokerUpToDate False, reason BrokerModeSwitchRefused, and a Warning) and changes nothing:
the Redis Pod, its StatefulSet, its Service and the Secret's url stay as they were, no Sentinel is made, the
waiting tasks stay in Redis, and, once workers start, each runs exactly once (reconcile/broker_mode.py,
docs/broker.md "Switching modes").

The operator runs on the host; the test reaches Redis at its Pod IP and sends with the project's producer.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.models import SENTINEL_MEMBERS
from jobqueue_operator.reasons import Reason
from jobqueue_worker import producer, records
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    GROUP,
    PLURAL,
    VERSION,
    apply_jobqueue,
    get_jobqueue,
    hosted_operator_in,
    jobqueue_manifest,
)
from tests.integration.operator.test_broker_day_two import _event, _redis_pod, _secret, _url, _wait_condition

NAME = "switch"
NAME_HA = "switchback"
QUEUE = "work"
TASKS = 20


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory) as running:
        yield running.log


def _queue(replicas: int) -> dict[str, Any]:
    return {"name": QUEUE, "replicas": replicas, "concurrency": 2, "pool": "threads", "timeLimitSeconds": 20}


def _high_availability(enabled: bool) -> dict[str, Any]:
    return {"spec": {"broker": {"managed": {"highAvailability": {"enabled": enabled}}}}}


def _broker_objects(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, name: str = NAME) -> dict[str, Any]:
    """What a switch would change: the broker's StatefulSets and Services (names, uids, generations, replicas,
    clusterIP), its Pods (names, uids) and the Secret's url."""
    selector = f"{naming.JOBQUEUE_LABEL}={name}"
    statefulsets = apps.list_namespaced_stateful_set(namespace, label_selector=selector).items
    services = core.list_namespaced_service(namespace, label_selector=selector).items
    pods = core.list_namespaced_pod(namespace, label_selector=f"{selector},{naming.COMPONENT_LABEL}={naming.BROKER}")
    return {
        "statefulsets": {
            s.metadata.name: (s.metadata.uid, s.metadata.generation, s.spec.replicas) for s in statefulsets
        },
        "services": {s.metadata.name: (s.metadata.uid, s.spec.cluster_ip) for s in services},
        "pods": {p.metadata.name: p.metadata.uid for p in pods.items},
        "url": _secret(core, namespace, naming.redis_secret(name), naming.URL_KEY),
    }


def test_switching_a_running_broker_to_high_availability_is_refused_and_loses_nothing(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    managed = {"persistence": {"enabled": False}}
    apply_jobqueue(kubectl, ns, jobqueue_manifest(NAME, [_queue(0)], broker={"managed": managed}))
    _wait_condition(custom, ns, NAME, "Ready", lambda c: c["status"] == "True", timeout=120)
    pod = _redis_pod(core, ns, NAME)
    url = _url(pod, _secret(core, ns, naming.redis_secret(NAME), naming.PASSWORD_KEY))
    run = uuid.uuid4().hex
    sent = [result.id for result in producer.send(producer.producer_app(url), QUEUE, "noop", TASKS, run_id=run)]
    assert redis.Redis.from_url(url).llen(QUEUE) == TASKS  # waiting: no worker runs
    before = _broker_objects(apps, core, ns)
    assert before["url"].startswith("redis://")
    assert set(before["statefulsets"]) == {naming.redis(NAME)}

    asked = time.monotonic()
    generation = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME, _high_availability(True))[
        "metadata"
    ]["generation"]
    refused = _wait_condition(
        custom,
        ns,
        NAME,
        "BrokerUpToDate",
        lambda c: c["reason"] == Reason.BROKER_MODE_SWITCH_REFUSED and c["observedGeneration"] == generation,
    )
    print(f"switch refused {time.monotonic() - asked:.1f} s after the spec asked for it")
    assert refused["status"] == "False"
    assert refused["message"].startswith(
        "switching an existing JobQueue's broker to high availability is not supported yet"
    )
    _event(core, ns, NAME, Reason.BROKER_MODE_SWITCH_REFUSED, "left unchanged")
    # The status of generation `generation` is written after that reconcile's writes: any change is made.
    assert _broker_objects(apps, core, ns) == before  # no Sentinel, no member, no headless Service, same url
    assert redis.Redis.from_url(url).llen(QUEUE) == TASKS  # nothing lost
    ready = get_jobqueue(custom, ns, NAME)
    assert next(c for c in ready["status"]["conditions"] if c["type"] == "Ready")["status"] == "True", ready["status"]

    # Other changes still apply while the refusal stands: the workers start and run every task once.
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME, {"spec": {"queues": [_queue(1)]}})
    reader = redis.Redis.from_url(url)
    wait_until(lambda: len(records.read(reader, run, records.DONE)) == TASKS, timeout=180, what="every task done")
    assert records.read(reader, run, records.DONE) == dict.fromkeys(sent, 1)  # each exactly once
    assert _broker_objects(apps, core, ns) == before

    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME, _high_availability(False))
    _wait_condition(custom, ns, NAME, "BrokerUpToDate", lambda c: c["status"] == "True")
    assert _broker_objects(apps, core, ns) == before
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME)


def _master_url(core: client.CoreV1Api, namespace: str, password: str) -> str | None:
    """The URL of the member that reports itself master (`ROLE`), at its Pod IP, once all three are ready."""
    selector = f"{naming.JOBQUEUE_LABEL}={NAME_HA},{naming.COMPONENT_LABEL}={naming.BROKER}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
    if len(ready) != SENTINEL_MEMBERS:
        return None
    for pod in ready:
        url = _url(pod, password)
        try:
            role = redis.Redis.from_url(url, socket_timeout=3).execute_command("ROLE")  # type: ignore[no-untyped-call]
        except redis.RedisError:
            continue
        if role[0] in (b"master", "master") and len(role[2]) == SENTINEL_MEMBERS - 1:
            return url
    return None


def test_switching_a_highly_available_broker_back_to_one_redis_is_refused_and_loses_nothing(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    managed = {"persistence": {"enabled": False}, "highAvailability": {"enabled": True}}
    apply_jobqueue(kubectl, ns, jobqueue_manifest(NAME_HA, [_queue(0)], broker={"managed": managed}))
    password = wait_until(
        lambda: _secret(core, ns, naming.redis_secret(NAME_HA), naming.PASSWORD_KEY), timeout=60, what="the Secret"
    )
    url = wait_until(lambda: _master_url(core, ns, password), timeout=300, what="a master with two replicas")
    _wait_condition(custom, ns, NAME_HA, "Ready", lambda c: c["status"] == "True", timeout=300)
    producer.send(producer.producer_app(url), QUEUE, "noop", TASKS, run_id=uuid.uuid4().hex)
    assert redis.Redis.from_url(url).llen(QUEUE) == TASKS
    before = _broker_objects(apps, core, ns, NAME_HA)
    assert before["url"].startswith("sentinel://")
    assert set(before["statefulsets"]) == {naming.redis(NAME_HA), naming.sentinel(NAME_HA)}

    patched = custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME_HA, _high_availability(False))
    generation = patched["metadata"]["generation"]
    refused = _wait_condition(
        custom,
        ns,
        NAME_HA,
        "BrokerUpToDate",
        lambda c: c["reason"] == Reason.BROKER_MODE_SWITCH_REFUSED and c["observedGeneration"] == generation,
    )
    assert refused["message"].startswith(
        "switching an existing JobQueue's broker from high availability back to a single Redis is not supported yet"
    )
    assert _broker_objects(apps, core, ns, NAME_HA) == before  # three members, the Sentinels, the same url
    assert redis.Redis.from_url(url).llen(QUEUE) == TASKS  # nothing lost, on the same master

    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME_HA, _high_availability(True))
    _wait_condition(custom, ns, NAME_HA, "BrokerUpToDate", lambda c: c["reason"] != Reason.BROKER_MODE_SWITCH_REFUSED)
    assert _broker_objects(apps, core, ns, NAME_HA) == before
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, NAME_HA)
