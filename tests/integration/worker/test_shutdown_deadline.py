"""SIGTERM with a deadline (jobqueue_worker/shutdown.py), on real worker processes and a real Redis: a task
that ends before the deadline finishes once; one that would not is handed back at the deadline and runs to
completion on another worker; what the worker reserved but had not started goes back at once."""

from __future__ import annotations

import signal
import time
import uuid

import pytest
from celery import Celery

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_worker import producer, records, shutdown
from tests.integration.worker.conftest import StartWorker
from tests.integration.worker.test_redelivery import PREFIX, queued, sender  # noqa: F401  # sender: fixture

DEADLINE = 6


def test_a_task_ending_before_the_deadline_finishes_once(
    start_worker: StartWorker,
    sender: Celery,  # noqa: F811
    redis_server: RedisServer,
    queue_name: str,
) -> None:
    client = redis_server.client()
    worker = start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS=str(DEADLINE))
    run = uuid.uuid4().hex
    (task,) = producer.send(sender, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 2})
    wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=30, what="the task started")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0  # a warm shutdown that ended in time: exit 0, no hand-back
    assert records.read(client, run, records.DONE, PREFIX) == {task.id: 1}
    assert records.read(client, run, records.STARTED, PREFIX) == {task.id: 1}
    assert queued(client, queue_name) == 0
    assert "shutdown deadline" not in worker.output()


@pytest.mark.parametrize("pool", sorted(shutdown.HAND_BACK_POOLS))
def test_a_task_outlasting_the_deadline_is_handed_back_at_it_and_runs_again_elsewhere(
    start_worker: StartWorker,
    sender: Celery,  # noqa: F811
    redis_server: RedisServer,
    queue_name: str,
    pool: str,
) -> None:
    client = redis_server.client()
    worker = start_worker(
        queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS=str(DEADLINE), JOBQUEUE_POOL=pool
    )
    run = uuid.uuid4().hex
    (task,) = producer.send(sender, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 4 * DEADLINE})
    wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=30, what="the task started")
    sent_at = time.monotonic()
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: queued(client, queue_name) == 1, timeout=60, what="the long task handed back to its queue")
    handed_back_after = time.monotonic() - sent_at
    worker.proc.wait(timeout=60)
    assert "shutdown deadline" in worker.output()
    assert handed_back_after >= DEADLINE  # not before the deadline: a task that ends in time is not cut
    assert broker.list_incarnations(redis_server.url, PREFIX, queues=[queue_name]) == []  # nothing left to restore
    assert records.read(client, run, records.DONE, PREFIX) == {}

    start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX)
    wait_until(lambda: records.read(client, run, records.DONE, PREFIX), timeout=4 * DEADLINE + 60, what="done")
    assert records.read(client, run, records.DONE, PREFIX) == {task.id: 1}
    assert records.read(client, run, records.STARTED, PREFIX) == {task.id: 2}
    print(f"handed back {handed_back_after:.1f}s after SIGTERM (deadline {DEADLINE}s)")


def test_a_solo_worker_is_not_cut_at_the_deadline(
    start_worker: StartWorker,
    sender: Celery,  # noqa: F811
    redis_server: RedisServer,
    queue_name: str,
) -> None:
    """The solo pool cannot cancel its running task: past the deadline it goes on (until the kubelet's
    SIGKILL; the operator then puts its message back), it is never failed or dead-lettered by the shutdown."""
    client = redis_server.client()
    worker = start_worker(
        queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS="1", JOBQUEUE_POOL="solo"
    )
    run = uuid.uuid4().hex
    (task,) = producer.send(sender, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 8})
    wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=30, what="the task started")
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=60) == 0  # a warm exit after the task, well past the 1 s deadline
    assert records.read(client, run, records.DONE, PREFIX) == {task.id: 1}
    assert "shutdown deadline" not in worker.output()


def test_reserved_tasks_go_back_at_once_on_sigterm_and_each_task_runs_once(
    start_worker: StartWorker,
    sender: Celery,  # noqa: F811
    redis_server: RedisServer,
    queue_name: str,
) -> None:
    client = redis_server.client()
    worker = start_worker(
        queue_name,
        JOBQUEUE_KEY_PREFIX=PREFIX,
        JOBQUEUE_PREFETCH_MULTIPLIER="3",
        JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS="120",
    )
    run = uuid.uuid4().hex
    sent = producer.send(sender, queue_name, "sleep", 3, run_id=run, kwargs={"seconds": 8})
    wait_until(lambda: queued(client, queue_name) == 0, timeout=30, what="the worker reserving all three")
    wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=30, what="one task started")
    worker.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: queued(client, queue_name) == 2, timeout=10, what="the two reserved tasks back in the queue")
    assert len(records.read(client, run, records.DONE, PREFIX)) == 0  # long before the running task's end
    assert worker.proc.wait(timeout=60) == 0  # the running task finished: a warm exit
    assert len(records.read(client, run, records.DONE, PREFIX)) == 1

    start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX)
    wait_until(lambda: len(records.read(client, run, records.DONE, PREFIX)) == 3, timeout=90, what="all three done")
    assert records.read(client, run, records.DONE, PREFIX) == {task.id: 1 for task in sent}
    assert records.read(client, run, records.STARTED, PREFIX) == {task.id: 1 for task in sent}
