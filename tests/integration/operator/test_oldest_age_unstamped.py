"""The oldest waiting task's age for a producer that does not stamp its tasks: a plain Celery app (no
`jobqueue_worker.sent_time`, in a process of its own), a real redis-server, a real `jobqueue-worker`, and
the operator's real autoscaler tick (`scaling.tick`; the API server is the unit tier's typed fake, since
only the broker matters here). The operator dates the tasks itself (first sight of the oldest), exports
the age with its source, writes both to the status, and latency mode scales up as that age grows."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming, scaling
from jobqueue_operator.metrics import OperatorMetrics
from jobqueue_worker import contract
from tests.integration.worker.conftest import WORKER, WorkerProcess, worker_env
from tests.unit.operator.fake_kube import FakeKube

QUEUE = "renders"
DEPLOYMENT = f"m-{QUEUE}-worker"
SLEEP = "jobqueue_worker.tasks.sleep"
PRODUCER = f"""
import sys
from celery import Celery

app = Celery("plain", broker=sys.argv[1])
for _ in range(int(sys.argv[3])):
    app.send_task("{SLEEP}", kwargs={{"seconds": 0.2}}, queue=sys.argv[2])
"""
"""An unchanged producer: plain Celery, nothing of this project imported."""


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.running(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _send(url: str, count: int) -> None:
    subprocess.run([sys.executable, "-c", PRODUCER, url, QUEUE, str(count)], check=True, timeout=60)


def _body() -> dict[str, Any]:
    autoscaling = {"minReplicas": 0, "maxReplicas": 4, "targetWaitSeconds": 10, "startupSeconds": 5}
    return {
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": {
            "image": "i",
            "app": "jobqueue_worker.demo:app",
            "broker": {"external": {"urlSecretRef": {"name": "url", "key": "url"}}},
            "queues": [{"name": QUEUE, "priorityLevels": 1, "autoscaling": autoscaling}],
        },
    }


def _kube(url: str) -> FakeKube:
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(url.encode()).decode()}
    labels = {naming.QUEUE_LABEL: QUEUE, naming.JOBQUEUE_LABEL: "m", naming.COMPONENT_LABEL: naming.WORKER}
    kube.objects[("Deployment", DEPLOYMENT)] = {
        "metadata": {"name": DEPLOYMENT, "labels": labels, "resourceVersion": "1"},
        "spec": {"replicas": 1, "template": {"spec": {"containers": [{"name": "worker", "env": []}]}}},
        "status": {"replicas": 1, "readyReplicas": 1},
    }
    return kube


class Operator:
    """The operator's tick of one JobQueue, run on demand (every poll of a wait is one tick)."""

    def __init__(self, kube: FakeKube) -> None:
        self.kube, self.memory, self.metrics, self.body = kube, scaling.Memory(), OperatorMetrics(), _body()

    def tick(self) -> None:
        scaling.tick(self.kube, self.body, self.memory, self.metrics)

    def sample(self, name: str) -> dict[tuple[tuple[str, str], ...], float]:
        text = generate_latest(self.metrics.registry).decode()
        return {
            tuple(sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.name == name and s.labels.get("queue") == QUEUE
        }

    def age(self) -> tuple[float, str] | None:
        """(exported age, its source) after one more tick; None while there is none."""
        self.tick()
        ages = self.sample("jobqueue_queue_oldest_task_age_seconds")
        sources = [
            dict(labels)["source"]
            for labels, value in self.sample("jobqueue_queue_oldest_task_age_source").items()
            if value
        ]
        return (next(iter(ages.values())), sources[0]) if ages and len(sources) == 1 else None

    def status_queue(self) -> dict[str, Any]:
        [entry] = self.kube.status[naming.AUTOSCALER_FIELD_MANAGER]["queues"]
        return dict(entry)


def test_an_unstamped_backlog_is_dated_by_first_sight_and_latency_mode_scales_up_on_it(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    operator = Operator(_kube(redis_server.url))
    client = redis_server.client()

    # A worker runs a first batch, so that the autoscaler knows the run time (latency mode plans with it).
    port = free_port(host="")
    log = tmp_path / "worker.log"
    with log.open("ab") as sink:
        env = worker_env(redis_server.url, QUEUE, port)
        proc = subprocess.Popen([WORKER], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        WorkerProcess(proc, port, log).wait_ready()
        operator.tick()
        _send(redis_server.url, 10)

        def learned() -> bool:
            operator.tick()
            done = client.hget(contract.stats_key(QUEUE), "completed")
            return int(done or 0) >= 10 and not client.llen(QUEUE)

        wait_until(learned, timeout=60, interval=1.0, what="the first batch done and counted")
    finally:
        stop_group(proc)
    operator.tick()

    # Its Pod is now starting again (not ready); an unchanged producer sends a backlog that nothing takes.
    operator.kube.objects[("Deployment", DEPLOYMENT)]["status"] = {"replicas": 1, "readyReplicas": 0}
    sent = len(operator.kube.events)
    _send(redis_server.url, 20)
    oldest = json.loads(client.lindex(QUEUE, -1))
    assert contract.SENT_AT_HEADER not in oldest["headers"]  # nothing to read the age from

    first = wait_until(
        lambda: (found := operator.age()) and found[0] >= 2 and found,
        timeout=60,
        interval=1.0,
        what="an age for the unstamped backlog",
    )
    assert first[1] == "first-seen"
    later = wait_until(
        lambda: (found := operator.age()) and found[0] >= first[0] + 3 and found,
        timeout=60,
        interval=1.0,
        what="the age growing",
    )
    assert later[1] == "first-seen"
    entry = operator.status_queue()
    assert entry["oldestTaskAgeSource"] == "first-seen"
    assert entry["oldestTaskAgeSeconds"] >= int(first[0]) + 3

    def drained() -> list[int]:
        """The ages latency mode's drain rule scaled up on since the backlog was sent."""
        operator.tick()
        return [
            int(message.split("(oldest waited ")[1].split("s,")[0])
            for _, reason, message in operator.kube.events[sent:]
            if reason == "ScaledUp" and "(Drain: " in message
        ]

    ages = wait_until(lambda: [age for age in drained() if age >= 5], timeout=60, interval=1.0, what="a drain")
    assert ages[0] >= 5  # past half the 10 s target: the starting Pod alone can no longer start them all in time
