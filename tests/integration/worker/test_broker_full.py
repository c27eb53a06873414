"""A real `jobqueue-worker` against a real Redis that goes over its maxmemory the moment the worker takes a
task: BRPOP still hands the message over, the writes that record it are refused. The worker holds the
delivery until the broker takes writes again (as after the operator opens its memory reserve), records it
and runs it: the task is neither dropped nor lost."""

from __future__ import annotations

import uuid
from pathlib import Path

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer, records, tasks
from tests.integration.worker.conftest import StartWorker


def test_a_delivery_taken_while_the_broker_is_full_waits_until_it_is_recorded_then_runs(
    start_worker: StartWorker, tmp_path: Path, queue_name: str
) -> None:
    with RedisServer.running(tmp_path / "full") as server:
        client = server.client()
        worker = start_worker(queue_name, redis_url=server.url)
        app = producer.producer_app(server.url)
        staging, run_id = f"{queue_name}-staging", uuid.uuid4().hex
        app.send_task(tasks.noop.name, kwargs={"run_id": run_id}, queue=staging)  # parked where no one reads
        app.close()
        assert client.llen(staging) == 1
        with client.pipeline(transaction=True) as pipe:  # onto the worker's queue and full, in one step
            pipe.rpoplpush(staging, queue_name)
            pipe.config_set("maxmemory", 1)
            pipe.execute()
        wait_until(lambda: "over its maxmemory" in worker.output(), timeout=20, what="the worker holding it")
        assert client.llen(queue_name) == 0  # taken off the list ...
        assert client.hlen("unacked") == 0  # ... and not recorded yet: only the worker has it now
        client.config_set("maxmemory", 0)  # what the operator's reserve does for a managed broker
        done = wait_until(lambda: records.read(client, run_id, records.DONE), timeout=30, what="the task run")
        assert len(done) == 1
        assert worker.proc.poll() is None
        assert "not recorded as held" not in worker.output()
