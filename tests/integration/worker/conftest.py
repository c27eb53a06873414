"""Real Redis servers and real `jobqueue-worker` processes for the worker tests.

Every process a fixture starts runs in its own session and is stopped (its whole process group) when
the test ends, so no Redis, worker or pool child outlives the run.
"""

from __future__ import annotations

import contextlib
import gc
import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from celery import Celery
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer

WORKER = str(Path(sys.executable).with_name("jobqueue-worker"))
DEMO_APP = "jobqueue_worker.demo:app"


@contextlib.contextmanager
def blackhole(port: int) -> Iterator[None]:
    """Make connections to 127.0.0.1:`port` hang instead of being refused, as they do to a Service whose
    Redis Pod is gone: a listener with a full backlog (one connection never accepted) drops new SYNs."""
    with socket.socket() as server:
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", port))
        server.listen(0)
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            yield


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """The Redis all worker tests share; each test uses its own queue names."""
    with RedisServer.running(tmp_path_factory.mktemp("redis")) as server:
        yield server


ProducerFor = Callable[[str], Celery]


@pytest.fixture
def producer_for(redis_server: RedisServer) -> Iterator[ProducerFor]:
    """Producer apps on the shared Redis, one per key prefix asked for; closed when the test ends."""
    apps: list[Celery] = []

    def make(prefix: str = "") -> Celery:
        apps.append(producer.producer_app(redis_server.url, key_prefix=prefix))
        return apps[-1]

    yield make
    gc.collect()  # results caught in reference cycles unsubscribe now, while Redis still runs
    for app in apps:
        app.close()


@pytest.fixture
def queue_name() -> str:
    return f"q-{uuid.uuid4().hex[:8]}"


@dataclass
class WorkerProcess:
    """A running `jobqueue-worker` and its HTTP endpoints."""

    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    def get(self, path: str) -> requests.Response:
        return requests.get(f"http://127.0.0.1:{self.port}{path}", timeout=5)

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample of /metrics, keyed by (sample name, sorted labels)."""
        text = self.get("/metrics").text
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def sample(self, name: str, **labels: str) -> float:
        """Sum of the samples of `name` whose labels include `labels` (0 when none)."""
        wanted = set(labels.items())
        return sum(value for (sample, got), value in self.metrics().items() if sample == name and wanted <= set(got))

    def wait_ready(self, timeout: float = 30) -> None:
        wait_until(lambda: self.get("/readyz").status_code == 200, timeout=timeout, what=f"worker ready ({self.log})")

    def output(self) -> str:
        return self.log.read_text(errors="replace")


StartWorker = Callable[..., WorkerProcess]


def worker_env(redis_url: str, queue: str, port: int, **overrides: str) -> dict[str, str]:
    """The environment the operator would set, for the demo app."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JOBQUEUE_", "PROMETHEUS_"))}
    env.update(
        JOBQUEUE_APP=DEMO_APP,
        JOBQUEUE_NAME="media",
        JOBQUEUE_QUEUE=queue,
        JOBQUEUE_BROKER_URL=redis_url,
        JOBQUEUE_CONCURRENCY="1",
        JOBQUEUE_METRICS_PORT=str(port),
        POD_NAME=f"worker-{queue}-{port}",
    )
    env.update(overrides)
    return env


@pytest.fixture
def start_worker(tmp_path: Path, redis_server: RedisServer) -> Iterator[StartWorker]:
    """Start workers (demo app, one queue, concurrency 1 unless overridden); all stopped at test end."""
    started: list[WorkerProcess] = []

    def start(queue: str, redis_url: str | None = None, wait: bool = True, **overrides: str) -> WorkerProcess:
        port = free_port(host="")  # free on every interface: the worker listens on 0.0.0.0
        log = tmp_path / f"worker-{queue}-{port}.log"
        env = worker_env(redis_url or redis_server.url, queue, port, **overrides)
        with log.open("ab") as sink:
            proc = subprocess.Popen([WORKER], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
        worker = WorkerProcess(proc, port, log)
        started.append(worker)
        if wait:
            worker.wait_ready()
        return worker

    yield start
    for worker in started:
        stop_group(worker.proc)
