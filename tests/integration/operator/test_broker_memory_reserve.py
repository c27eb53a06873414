"""The autoscaler tick against a real redis-server that a producer fills to its maxmemory: the tick opens
the managed broker's memory reserve (CONFIG SET, so a worker's writes go through again), says so in the
condition and an Event, and closes it once the broker has drained. The API server is the typed fake: what
is under test here is the broker side."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_operator import naming, scaling, status
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason
from tests.unit.operator.fake_kube import FakeKube

LIMIT = "64Mi"
PAYLOAD = b"x" * 64 * 1024


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with RedisServer.running(tmp_path / "redis") as running:
        yield running


def _body() -> dict[str, Any]:
    return {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": "full", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": HOST_PROCESS_IMAGE,
            "app": "a:app",
            "broker": {"managed": {"resources": {"limits": {"memory": LIMIT}}}},
            "queues": [{"name": "work"}],
        },
    }


def _memory_condition(kube: FakeKube) -> dict[str, Any]:
    written = kube.status[naming.AUTOSCALER_FIELD_MANAGER]
    return next(c for c in written["conditions"] if c["type"] == status.BROKER_MEMORY_AVAILABLE)


def _fill(client: redis.Redis) -> int:
    """Push tasks until Redis refuses one; how many it took."""
    sent = 0
    while True:
        try:
            client.lpush("work", PAYLOAD)
        except redis.exceptions.OutOfMemoryError:
            return sent
        sent += 1


def test_a_full_managed_broker_gets_its_reserve_and_loses_it_again_once_drained(server: RedisServer) -> None:
    managed = JobQueue.from_body(_body()).spec.broker.managed
    assert managed is not None
    bounds = redis_build.memory_bounds(managed)
    assert bounds is not None
    client = server.client()
    client.config_set("maxmemory", bounds.normal)  # what the StatefulSet's redis-server starts with
    client.config_set("maxmemory-policy", "noeviction")
    kube = FakeKube()
    kube.secrets[naming.redis_secret("full")] = {naming.URL_KEY: base64.b64encode(server.url.encode()).decode()}
    memory, metrics = scaling.Memory(), OperatorMetrics()

    sent = _fill(client)  # until the producer is refused: nothing evicted
    with pytest.raises(redis.exceptions.OutOfMemoryError):  # and so is a worker recording what it takes
        client.hset("unacked", "tag", PAYLOAD)

    scaling.tick(kube, _body(), memory, metrics)
    assert int(client.config_get("maxmemory")["maxmemory"]) == bounds.reserve
    assert _memory_condition(kube)["reason"] == Reason.BROKER_MEMORY_FULL
    assert Reason.BROKER_MEMORY_RESERVE_OPENED in [reason for _, reason, _ in kube.events]
    client.hset("unacked", "tag", PAYLOAD)  # the worker's write goes through now
    assert client.llen("work") == sent  # every accepted task still there

    for _ in range(sent // 5):  # the workers drain a fifth of it
        client.rpop("work")
    scaling.tick(kube, _body(), memory, metrics)
    assert int(client.config_get("maxmemory")["maxmemory"]) == bounds.reserve  # not drained enough: stays
    assert _memory_condition(kube)["reason"] == Reason.BROKER_MEMORY_DRAINING

    client.delete("work", "unacked")
    scaling.tick(kube, _body(), memory, metrics)
    assert int(client.config_get("maxmemory")["maxmemory"]) == bounds.normal
    assert Reason.BROKER_MEMORY_RESERVE_CLOSED in [reason for _, reason, _ in kube.events]
    scaling.tick(kube, _body(), memory, metrics)
    assert _memory_condition(kube)["status"] == "True"
