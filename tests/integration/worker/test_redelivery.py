"""Prompt redelivery against a real Redis: real `jobqueue-worker` processes register, beat and record what
they hold; the operator's `broker.restore_incarnation` puts a dead one's messages back in one call.

Two tests race the restore against what really runs next to it (acks, kombu's own visibility sweep) on
deliveries made by kombu's real consumer with the worker's `HeldQoS` installed in this process.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kombu
import pytest
from celery import Celery

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_worker import contract, held, producer, records, restore
from jobqueue_worker.restore import RestoreOutcome
from tests.integration.worker.conftest import ProducerFor, StartWorker, WorkerProcess

PREFIX = "jq:"


@pytest.fixture
def sender(producer_for: ProducerFor) -> Celery:
    return producer_for(PREFIX)


def incarnation(url: str, queue: str) -> broker.Incarnation | None:
    found = broker.list_incarnations(url, PREFIX, queues=[queue])
    return found[0] if len(found) == 1 else None


def queued(client: Any, queue: str, steps: tuple[int, ...] = contract.DEFAULT_PRIORITY_STEPS) -> int:
    return sum(client.llen(key) for key in contract.queue_lists(queue, steps, PREFIX))


def kill(worker: WorkerProcess) -> None:
    """SIGKILL the worker and its pool children at once: the Pod's container killed, nothing restored."""
    os.killpg(worker.proc.pid, signal.SIGKILL)
    worker.proc.wait(10)


def test_a_killed_workers_deliveries_come_back_in_one_call_and_run_exactly_once_more(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    doomed = start_worker(queue_name, JOBQUEUE_PREFETCH_MULTIPLIER="4", JOBQUEUE_KEY_PREFIX=PREFIX, POD_UID="uid-a")
    run = uuid.uuid4().hex
    sent = producer.send(sender, queue_name, "sleep", 6, priorities=(0, 9), run_id=run, kwargs={"seconds": 2})
    found = wait_until(
        lambda: (i := incarnation(redis_server.url, queue_name)) and i.held == 4 and i,
        timeout=20,
        what="the worker holding one running and three reserved tasks",
    )
    assert (found.alive, found.registration.pod_uid, found.registration.queue) == (True, "uid-a", queue_name)
    wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=10, what="the first task started")
    unacked = client.hlen(PREFIX + contract.UNACKED)

    # Alive: refused and nothing touched; SIGKILLed but heartbeat not yet expired: still refused.
    assert (
        broker.restore_incarnation(redis_server.url, found.registration.instance, PREFIX).outcome
        == RestoreOutcome.ALIVE
    )
    kill(doomed)
    killed_at = time.monotonic()
    assert (
        broker.restore_incarnation(redis_server.url, found.registration.instance, PREFIX).outcome
        == RestoreOutcome.ALIVE
    )
    assert (client.hlen(PREFIX + contract.UNACKED), queued(client, queue_name)) == (unacked, 2)

    wait_until(
        lambda: not broker.list_incarnations(redis_server.url, PREFIX, queues=[queue_name])[0].alive,
        timeout=contract.HEARTBEAT_TTL_SECONDS + 5,
        what="the killed worker's heartbeat to expire",
    )
    expired_after = time.monotonic() - killed_at
    result = broker.restore_incarnation(redis_server.url, found.registration.instance, PREFIX)
    assert result == restore.Restore(RestoreOutcome.RESTORED, {queue_name: 4})
    assert queued(client, queue_name) == 6  # nobody consumes yet: all six wait again, none lost
    assert client.hlen(PREFIX + contract.UNACKED) == 0
    assert not client.exists(contract.held_key(found.registration.instance, PREFIX))
    losses = client.hgetall(contract.losses_key(queue_name, PREFIX))
    assert len(losses) == 4
    assert set(losses.values()) == {b"1"}
    assert {task_id.decode() for task_id in losses} <= {result.id for result in sent}
    assert broker.list_incarnations(redis_server.url, PREFIX, queues=[queue_name]) == []
    assert broker.restore_incarnation(redis_server.url, found.registration.instance, PREFIX).outcome == (
        RestoreOutcome.UNKNOWN
    )

    start_worker(queue_name, JOBQUEUE_CONCURRENCY="3", JOBQUEUE_KEY_PREFIX=PREFIX)
    wait_until(lambda: len(records.read(client, run, records.DONE, PREFIX)) == 6, timeout=40, what="all six tasks done")
    started = records.read(client, run, records.STARTED, PREFIX)
    assert records.read(client, run, records.DONE, PREFIX) == {result.id: 1 for result in sent}
    assert sorted(started.values()) == [1, 1, 1, 1, 1, 2]  # only the task running at the kill ran twice
    wait_until(lambda: client.hlen(PREFIX + contract.UNACKED) == 0, timeout=10, what="the last ack")
    print(f"heartbeat expired {expired_after:.1f}s after the kill")


def test_a_clean_exit_gives_back_what_it_reserved_and_unregisters(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    worker = start_worker(queue_name, JOBQUEUE_PREFETCH_MULTIPLIER="3", JOBQUEUE_KEY_PREFIX=PREFIX)
    run = uuid.uuid4().hex
    sent = producer.send(sender, queue_name, "sleep", 4, run_id=run, kwargs={"seconds": 1})
    found = wait_until(
        lambda: (i := incarnation(redis_server.url, queue_name)) and i.held == 3 and i,
        timeout=20,
        what="the worker holding three tasks",
    )
    worker.proc.send_signal(signal.SIGTERM)  # warm shutdown: finish the running task, give back the rest
    assert worker.proc.wait(30) == 0
    assert broker.list_incarnations(redis_server.url, PREFIX) == []
    assert not client.exists(contract.held_key(found.registration.instance, PREFIX))
    assert not client.exists(contract.alive_key(found.registration.instance, PREFIX))
    assert client.hlen(PREFIX + contract.UNACKED) == 0
    assert len(records.read(client, run, records.DONE, PREFIX)) + queued(client, queue_name) == len(sent)


@contextlib.contextmanager
def holding(url: str, queue: str, count: int, prefix: str = PREFIX) -> Iterator[tuple[str, list[kombu.Message]]]:
    """A dead incarnation made by kombu's real consumer and the worker's HeldQoS: `count` deliveries
    recorded exactly as a worker records them, then no heartbeat and no restore on the way out."""
    instance = uuid.uuid4().hex
    registration = contract.Registration(instance, queue, "pod", "uid", "ns", time.time())
    held.install(held.Holders(held.Holder(instance, registration.to_json())))
    received: list[kombu.Message] = []
    try:
        with kombu.Connection(url, transport_options={"global_keyprefix": prefix}) as connection:
            channel = connection.channel()
            channel.qos.restore_at_shutdown = False  # a dead process restores nothing
            consumer = kombu.Consumer(channel, [kombu.Queue(queue)], callbacks=[lambda _, m: received.append(m)])
            with consumer:
                while len(received) < count:
                    connection.drain_events(timeout=5)
            yield instance, received
    finally:
        held.install(None)


def publish(sender: Celery, queue: str, count: int) -> list[str]:
    return [result.id for result in producer.send(sender, queue, "noop", count)]


def restored_ids(client: Any, queue: str) -> list[str]:
    return [
        json.loads(raw)["headers"]["id"]
        for key in contract.queue_lists(queue, contract.DEFAULT_PRIORITY_STEPS, PREFIX)
        for raw in client.lrange(key, 0, -1)
    ]


@pytest.mark.parametrize("round_", range(3))
def test_restore_is_atomic_under_concurrent_acks(
    sender: Celery, redis_server: RedisServer, queue_name: str, round_: int
) -> None:
    client = redis_server.client()
    total = 300
    ids = publish(sender, queue_name, total)
    with holding(redis_server.url, queue_name, total) as (instance, messages):
        assert client.hlen(contract.held_key(instance, PREFIX)) == total
        acked: list[str] = []
        go = threading.Event()

        def ack_all() -> None:
            go.wait()
            for message in messages:
                message.ack()
                acked.append(message.headers["id"])

        acker = threading.Thread(target=ack_all)
        acker.start()
        go.set()
        time.sleep(0.002 * round_)
        result = broker.restore_incarnation(redis_server.url, instance, PREFIX)
        acker.join(30)
    back = restored_ids(client, queue_name)
    assert result.outcome == RestoreOutcome.RESTORED
    assert result.total == len(back)
    assert len(set(back)) == len(back)  # nothing pushed twice
    assert set(back) | set(acked) == set(ids)  # nothing lost: every message was acked or is back
    assert client.hlen(PREFIX + contract.UNACKED) == 0
    assert client.zcard(PREFIX + contract.UNACKED_INDEX) == 0
    print(f"round {round_}: {len(back)} restored, {total - len(back)} acked first")


SWEEP = """
import sys, time, kombu
url, prefix, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
with kombu.Connection(url, transport_options={"global_keyprefix": prefix, "visibility_timeout": 0}) as c:
    qos = c.default_channel.qos
    print("ready", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        qos.restore_visible(num=1000, interval=1)
"""


@pytest.mark.parametrize("round_", range(3))
def test_kombus_visibility_sweep_and_the_restore_never_both_put_a_message_back(
    sender: Celery, redis_server: RedisServer, queue_name: str, round_: int
) -> None:
    """A plain kombu process sweeping `unacked` (visibility timeout 0: everything is overdue) runs while
    the operator restores the same messages: each comes back exactly once."""
    client = redis_server.client()
    total = 300
    ids = publish(sender, queue_name, total)
    with holding(redis_server.url, queue_name, total) as (instance, _):
        sweeper = subprocess.Popen(
            [sys.executable, "-c", SWEEP, redis_server.url, PREFIX, "1.5"], stdout=subprocess.PIPE, text=True
        )
        assert sweeper.stdout is not None
        assert sweeper.stdout.readline().strip() == "ready"
        time.sleep(0.01 * round_)
        result = broker.restore_incarnation(redis_server.url, instance, PREFIX)
        assert sweeper.wait(30) == 0
    back = restored_ids(client, queue_name)
    assert sorted(back) == sorted(ids)  # every message exactly once, whoever put it back
    assert result.outcome == RestoreOutcome.RESTORED
    assert client.hlen(PREFIX + contract.UNACKED) == 0
    print(f"round {round_}: the restore put back {result.total}, kombu's sweep {total - result.total}")


def test_a_message_another_worker_holds_now_is_not_taken_from_it(
    sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    """Delivery tags survive redelivery: after kombu's sweep gave the dead worker's message to a second
    worker, the first one's held hash still names that tag. Restoring the first must leave it alone."""
    client = redis_server.client()
    (task_id,) = publish(sender, queue_name, 1)
    with holding(redis_server.url, queue_name, 1) as (first, _):
        pass  # held, then dead
    sweep = subprocess.run(
        [sys.executable, "-c", SWEEP, redis_server.url, PREFIX, "0.5"], capture_output=True, text=True, timeout=30
    )
    assert sweep.returncode == 0, sweep.stderr
    assert restored_ids(client, queue_name) == [task_id]
    with holding(redis_server.url, queue_name, 1) as (second, messages):
        assert messages[0].delivery_tag.encode() in client.hkeys(contract.held_key(first, PREFIX))
        assert broker.restore_incarnation(redis_server.url, first, PREFIX) == restore.Restore(RestoreOutcome.RESTORED)
        assert client.hexists(PREFIX + contract.UNACKED, messages[0].delivery_tag)  # still the second's
        assert restored_ids(client, queue_name) == []
    assert broker.restore_incarnation(redis_server.url, second, PREFIX) == restore.Restore(
        RestoreOutcome.RESTORED, {queue_name: 1}
    )
    assert restored_ids(client, queue_name) == [task_id]


def test_a_task_cut_off_by_a_broker_restart_runs_again_at_once(
    start_worker: StartWorker, tmp_path: Path, queue_name: str
) -> None:
    """A Redis restart (with its data kept) mid-task: Celery cancels the task it can no longer acknowledge;
    the worker gives its message back as soon as it has reconnected, not after the visibility timeout."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        worker = start_worker(queue_name, redis_url=server.url, JOBQUEUE_KEY_PREFIX=PREFIX)
        app = producer.producer_app(server.url, key_prefix=PREFIX)
        run = uuid.uuid4().hex
        try:
            (task,) = producer.send(app, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 3}, ignore_result=True)
        finally:
            app.close()
        client = server.client()
        wait_until(lambda: records.read(client, run, records.STARTED, PREFIX), timeout=20, what="the task started")
        server.stop()
        wait_until(lambda: worker.get("/readyz").status_code == 503, timeout=30, what="the worker to lose Redis")
        server.start()
        done = wait_until(
            lambda: records.read(server.client(), run, records.DONE, PREFIX), timeout=60, what="the task done"
        )
        assert done == {task.id: 1}
        assert records.read(server.client(), run, records.STARTED, PREFIX) == {task.id: 2}
        assert "gave back 1 messages held before the broker connection was lost" in worker.output()
        wait_until(lambda: server.client().hlen(PREFIX + contract.UNACKED) == 0, timeout=10, what="the ack")
        (current,) = broker.list_incarnations(server.url, PREFIX)  # the old incarnation is gone, the new one beats
        assert current.alive
    finally:
        server.stop()
