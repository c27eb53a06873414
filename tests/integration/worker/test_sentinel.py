"""The worker and the project's producer on a Redis Sentinel broker (kombu's sentinel:// transport), through
real failovers: three redis-server and three Sentinel processes (`jobqueue_devenv.sentinel_process`), real
`jobqueue-worker` processes, the master SIGKILLed (the process is gone: its connections are reset) or
SIGSTOPped (hung: its connections stay open and nothing answers, as when its node dies).

The times from the fault to a task done again are printed (pytest -s), not asserted: numbers go to
bench/broker_failover.py.
"""

from __future__ import annotations

import os
import subprocess
import time
import uuid
from collections.abc import Iterator

import pytest
from celery import Celery

from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import confirm, failover, producer, records
from tests.integration.worker.conftest import WORKER, StartWorker

FAULTS = ("kill", "freeze")


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel")) as started:
        yield started


@pytest.fixture
def sender(group: SentinelGroup) -> Iterator[Celery]:
    """The project's producer on the group, following failovers as `jobqueue-worker send` does."""
    app = producer.producer_app(group.sentinel_url())
    with failover.watching(app):
        yield app
    app.close()


def done(group: SentinelGroup, run_id: str) -> int:
    """How many tasks of the run are done, read from the master the Sentinels name now."""
    return len(records.read(group.master().client(), run_id, records.DONE))


def run_and_wait(group: SentinelGroup, app: Celery, queue: str, count: int, timeout: float) -> None:
    """Send `count` noop tasks and wait until the worker has done them all."""
    run_id = uuid.uuid4().hex
    producer.send(app, queue, "noop", count, run_id=run_id, ignore_result=True)
    wait_until(lambda: done(group, run_id) >= count, timeout=timeout, what=f"{count} tasks of {queue} done")


def fault(group: SentinelGroup, kind: str) -> tuple[str, int]:
    return group.kill_master() if kind == "kill" else group.freeze_master()


@pytest.mark.parametrize("kind", FAULTS)
def test_a_worker_consumes_from_the_new_master_after_a_failover(
    group: SentinelGroup, sender: Celery, start_worker: StartWorker, queue_name: str, kind: str
) -> None:
    worker = start_worker(queue_name, redis_url=group.sentinel_url())
    run_and_wait(group, sender, queue_name, 3, timeout=30)

    faulted = time.monotonic()
    old = fault(group, kind)
    new = group.wait_for_new_master(old)
    promoted = time.monotonic()
    # Sent to the new master (the producer asks the Sentinels); done only if the worker consumes from it.
    run_and_wait(group, sender, queue_name, 1, timeout=60)
    print(
        f"\n{kind} master {old[1]}: Sentinel promoted {new[1]} after {promoted - faulted:.1f}s, "
        f"a task done after {time.monotonic() - faulted:.1f}s"
    )
    assert worker.proc.poll() is None, worker.output()
    if kind == "freeze":  # the worker cut its connections to the hung master (it would wait ~50 s otherwise)
        assert "closed" in worker.output(), worker.output()


def test_sends_the_producer_reported_done_survive_the_masters_death(group: SentinelGroup, sender: Celery) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    producer.send(sender, queue, "noop", 50, ignore_result=True)  # each returned after a replica confirmed it
    old = group.kill_master()  # at once: no time for anything but what was confirmed
    new = group.wait_for_new_master(old)
    assert group.servers[new[1]].client().llen(queue) == 50


def test_a_send_no_replica_confirms_is_an_error(group: SentinelGroup, sender: Celery) -> None:
    queue = f"q-{uuid.uuid4().hex[:8]}"
    producer.send(sender, queue, "noop", 1, ignore_result=True)
    for port in group.replica_ports():  # the master still counts them in sync for min-replicas-max-lag (10 s)
        group.freeze(port)
    with pytest.raises(confirm.NotReplicated, match="0 of the 1 replicas needed confirmed it"):
        producer.send(sender, queue, "noop", 1, ignore_result=True)


def test_jobqueue_worker_send_through_the_sentinels(
    group: SentinelGroup, start_worker: StartWorker, queue_name: str
) -> None:
    start_worker(queue_name, redis_url=group.sentinel_url())
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBQUEUE_")}
    env["JOBQUEUE_BROKER_URL"] = group.sentinel_url()
    sent = subprocess.run(
        [WORKER, "send", "--queue", queue_name, "--count", "5", "--wait", "60"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    assert "5/5 done" in sent.stdout
