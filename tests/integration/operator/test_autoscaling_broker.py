"""broker.read_counts against a real redis-server, real Celery messages and a real worker.

No cluster needed: the producer is `jobqueue_worker.producer`, the worker is `jobqueue-worker` with the
demo app, both using a key prefix so the prefixed keys are what is read.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_operator.broker import QueueKeys
from jobqueue_worker import producer
from tests.integration.worker.conftest import WORKER, WorkerProcess, worker_env

PREFIX = "jq:"
STEPS = (0, 3, 6, 9)


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with RedisServer.running(tmp_path_factory.mktemp("redis")) as server:
        yield server


def _start_worker(directory: Path, server: RedisServer, queue: str) -> WorkerProcess:
    """A real `jobqueue-worker` (demo app, concurrency 1, prefetch 1) on `queue`, ready."""
    port = free_port(host="")
    env = worker_env(server.url, queue, port, JOBQUEUE_KEY_PREFIX=PREFIX)
    log = directory / f"worker-{queue}.log"
    with log.open("ab") as sink:
        proc = subprocess.Popen([WORKER], env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    worker = WorkerProcess(proc, port, log)
    try:
        worker.wait_ready()
    except BaseException:
        stop_group(proc)
        raise
    return worker


def _counts(server: RedisServer, *names: str) -> dict[str, broker.QueueCounts]:
    return dict(broker.read_counts(server.url, [QueueKeys(n, STEPS) for n in names], PREFIX))


def test_ready_over_priority_lists_in_flight_oldest_age_and_completions(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    app = producer.producer_app(redis_server.url, key_prefix=PREFIX, priority_steps=STEPS)
    before = time.time()
    producer.send(app, "work", "sleep", 1, priorities=[0], kwargs={"seconds": 3})
    producer.send(app, "work", "sleep", 2, priorities=[5, 9], kwargs={"seconds": 0.1})
    producer.send(app, "other", "noop", 1)
    after = time.time()

    counts = _counts(redis_server, "work", "other")
    assert (counts["work"].ready, counts["work"].in_flight, counts["work"].completed) == (3, 0, 0)
    assert counts["other"].ready == 1
    oldest = counts["work"].oldest_sent_at
    assert oldest is not None
    assert before <= oldest <= after

    worker = _start_worker(tmp_path, redis_server, "work")
    try:
        # The 3 s task (priority 0, first out) runs: one in flight, two waiting; "other" untouched.
        running = wait_until(
            lambda: (c := _counts(redis_server, "work", "other"))["work"].in_flight == 1 and c,
            timeout=30,
            what="in flight",
        )
        assert running["work"].ready == 2
        assert running["other"].in_flight == 0
        wait_until(lambda: _counts(redis_server, "work")["work"].completed == 3, timeout=30, what="3 completions")
        # The pool child's flusher can write the last completion before the main process acks that task
        # (in_flight counts the unacked): wait for the ack rather than race it.
        done = wait_until(
            lambda: (c := _counts(redis_server, "work"))["work"].in_flight == 0 and c, timeout=10, what="the last ack"
        )
        assert (done["work"].ready, done["work"].in_flight, done["work"].oldest_sent_at) == (0, 0, None)
        assert done["work"].completed == 3
        assert done["work"].run_seconds >= 3.2
        assert done["work"].run_seconds_sq >= 9.0
    finally:
        stop_group(worker.proc)


def test_an_unreachable_broker_is_a_broker_error() -> None:
    port = free_port(host="")
    with pytest.raises(broker.BrokerError, match="cannot be read"):
        broker.read_counts(f"redis://127.0.0.1:{port}/0", [QueueKeys("q")], timeout=0.5)
