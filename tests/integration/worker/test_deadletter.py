"""Dead letters against a real Redis and real `jobqueue-worker` processes: every reason lands with its
reason, its exception and the original message exactly as it was sent, can be listed, requeued unchanged
and purged from the command line; a poison task stops after N worker losses, counted by the worker (a
killed pool child) or by the operator's restore (a killed worker); the queue keeps flowing."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import uuid
from typing import Any

import kombu
import pytest
from celery import Celery

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_worker import contract, producer, records
from jobqueue_worker.contract import DeadLetter, DeadLetterReason
from tests.integration.worker.conftest import WORKER, ProducerFor, StartWorker

PREFIX = "dl:"
NOOP = "jobqueue_worker.tasks.noop"


@pytest.fixture
def sender(producer_for: ProducerFor) -> Celery:
    return producer_for(PREFIX)


def letters(client: Any, queue: str) -> list[DeadLetter]:
    """Oldest first."""
    return [
        DeadLetter.from_json(raw) for raw in reversed(client.lrange(contract.dead_letter_key(queue, PREFIX), 0, -1))
    ]


def waiting(client: Any, queue: str) -> list[dict[str, Any]]:
    """The messages waiting in a queue, as stored (every priority list)."""
    return [
        json.loads(raw)
        for key in contract.queue_lists(queue, contract.DEFAULT_PRIORITY_STEPS, PREFIX)
        for raw in client.lrange(key, 0, -1)
    ]


def cli(redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}
    env.update(JOBQUEUE_BROKER_URL=redis_url, JOBQUEUE_KEY_PREFIX=PREFIX)
    return subprocess.run([WORKER, *args], env=env, capture_output=True, text=True, timeout=60, check=False)


def publish_refused(redis_url: str, queue: str) -> None:
    """Four messages Celery will not run, published the way a foreign or broken producer would."""
    task_headers = {"task": NOOP, "lang": "py", "argsrepr": "", "kwargsrepr": ""}
    with kombu.Connection(redis_url, transport_options={"global_keyprefix": PREFIX}) as connection:
        publisher = connection.Producer()
        publisher.publish([[1], {}, {}], routing_key=queue, serializer="pickle", headers={**task_headers, "id": "p-1"})
        publisher.publish({"no": "task"}, routing_key=queue, serializer="json", headers={})
        bad_eta = {**task_headers, "id": "eta-1", "eta": "not a date"}
        publisher.publish([[], {}, {}], routing_key=queue, serializer="json", headers=bad_eta)
        garbage = {**task_headers, "id": "garbage-1"}
        publisher.publish("{not json", routing_key=queue, content_type="application/json", headers=garbage)


def test_every_reason_lands_with_the_original_message_and_is_listed_requeued_and_purged(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    run = uuid.uuid4().hex
    (failing,) = producer.send(sender, queue_name, "fail", 1, run_id=run, kwargs={"message": "boom"})
    (hopeless,) = producer.send(
        sender, queue_name, "flaky", 1, run_id=run, kwargs={"failures": 5, "backoff_seconds": 0.05, "max_retries": 1}
    )
    (slow,) = producer.send(sender, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 30})
    unknown = sender.send_task("no.such.task", queue=queue_name)
    publish_refused(redis_server.url, queue_name)
    sent = {message["headers"].get("id") or "no-id": message for message in waiting(client, queue_name)}
    assert len(sent) == 8

    worker = start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_TIME_LIMIT_SECONDS="2")
    wait_until(lambda: len(letters(client, queue_name)) == 8, timeout=60, what="eight dead letters")
    by_id = {letter.task_id or "no-id": letter for letter in letters(client, queue_name)}
    reasons = {task_id: letter.reason for task_id, letter in by_id.items()}
    assert reasons == {
        failing.id: DeadLetterReason.FAILED,
        hopeless.id: DeadLetterReason.FAILED,
        slow.id: DeadLetterReason.TIME_LIMIT,
        unknown.id: DeadLetterReason.UNKNOWN_TASK,
        "p-1": DeadLetterReason.REFUSED_CONTENT,
        "no-id": DeadLetterReason.UNKNOWN_MESSAGE,
        "eta-1": DeadLetterReason.INVALID_TASK,
        "garbage-1": DeadLetterReason.UNDECODABLE,
    }
    # the hopeless task's retry is a new message with the same id: its letter keeps the last one sent
    assert {task_id: by_id[task_id].message for task_id in sent if task_id != hopeless.id} == {
        task_id: message for task_id, message in sent.items() if task_id != hopeless.id
    }
    assert by_id[hopeless.id].message["headers"]["retries"] == 1
    assert by_id[failing.id].exception == "DemoTaskError: boom"
    assert "raise DemoTaskError(message)" in by_id[failing.id].traceback
    assert by_id[slow.id].exception.startswith("TimeLimitExceeded")
    assert "pickle" in by_id["p-1"].exception
    nodename = f"{queue_name}@worker-{queue_name}-{worker.port}"  # the POD_NAME the worker conftest sets
    assert {(letter.queue, letter.worker) for letter in by_id.values()} == {(queue_name, nodename)}
    assert failing.state == "FAILURE"  # the producer still sees the failure
    wait_until(
        lambda: worker.sample("jobqueue_worker_dead_letters_total", queue=queue_name) == 8,
        timeout=10,
        what="eight dead letters counted",
    )
    assert worker.sample("jobqueue_worker_dead_letters_total", reason="failed") == 2
    assert broker.read_counts(redis_server.url, [broker.QueueKeys(queue_name)], PREFIX)[queue_name].dead_letters == 8
    # every one acknowledged: the worker went on. The ack comes just after the letter is written and counted,
    # so wait for it rather than race it.
    wait_until(lambda: client.hlen(PREFIX + contract.UNACKED) == 0, timeout=10, what="every dead letter acknowledged")

    listed = cli(redis_server.url, "deadletter", "list", "--queue", queue_name, "--count", "3")
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[-1] == f"3 of 8 dead letters of {queue_name}"
    newest = letters(client, queue_name)[-1]
    assert listed.stdout.splitlines()[0].startswith(f"{newest.id} ")  # newest first
    assert newest.reason.value in listed.stdout.splitlines()[0]
    as_json = cli(redis_server.url, "deadletter", "list", "--queue", queue_name, "--count", "100", "--json")
    assert sorted(json.loads(line)["id"] for line in as_json.stdout.splitlines()) == sorted(
        letter.id for letter in by_id.values()
    )

    worker.proc.send_signal(signal.SIGTERM)  # so that the requeued message stays to be looked at
    assert worker.proc.wait(30) == 0
    requeued = cli(redis_server.url, "deadletter", "requeue", "--queue", queue_name, "--id", by_id[unknown.id].id)
    assert requeued.returncode == 0, requeued.stderr
    assert waiting(client, queue_name) == [sent[unknown.id]]  # exactly as it was sent
    assert len(letters(client, queue_name)) == 7
    oldest = cli(redis_server.url, "deadletter", "requeue", "--queue", queue_name, "--count", "1")
    assert oldest.returncode == 0, oldest.stderr
    assert waiting(client, queue_name)[0] == sent[failing.id]  # the oldest: the first to fail
    missing = cli(redis_server.url, "deadletter", "requeue", "--queue", queue_name, "--id", "nope")
    assert (missing.returncode, missing.stderr) == (1, f"jobqueue-worker: no dead letter nope in {queue_name}\n")
    purged = cli(redis_server.url, "deadletter", "purge", "--queue", queue_name, "--count", "2")
    assert (purged.returncode, purged.stdout) == (0, f"2 dead letters of {queue_name} purged\n")
    purged = cli(redis_server.url, "deadletter", "purge", "--queue", queue_name, "--all")
    assert (purged.returncode, purged.stdout) == (0, f"4 dead letters of {queue_name} purged\n")
    assert letters(client, queue_name) == []
    assert len(waiting(client, queue_name)) == 2
    gone = cli(redis_server.url, "queue", "purge", "--queue", queue_name, "--yes")
    assert (gone.returncode, gone.stdout) == (0, f"2 waiting messages of {queue_name} purged\n")
    assert waiting(client, queue_name) == []


def test_a_task_that_kills_its_pool_child_is_dead_lettered_after_n_losses_and_the_queue_flows_on(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    worker = start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_MAX_WORKER_LOSSES="2")
    run = uuid.uuid4().hex
    (poison,) = producer.send(sender, queue_name, "crash", 1, run_id=run)
    healthy = producer.send(sender, queue_name, "noop", 3, run_id=run)
    (letter,) = wait_until(lambda: letters(client, queue_name), timeout=60, what="the poison task dead-lettered")
    assert (letter.reason, letter.task_id) == (DeadLetterReason.WORKER_LOST, poison.id)
    assert "lost 2 times" in letter.exception
    wait_until(lambda: len(records.read(client, run, records.DONE, PREFIX)) == 3, timeout=30, what="the healthy tasks")
    assert records.read(client, run, records.STARTED, PREFIX)[poison.id] == 2
    assert {result.id for result in healthy} <= set(records.read(client, run, records.DONE, PREFIX))
    # forgotten once given up: just after the letter is written, so wait for it rather than race it
    wait_until(
        lambda: not client.exists(contract.losses_key(queue_name, PREFIX)), timeout=10, what="the losses forgotten"
    )
    assert worker.proc.poll() is None
    assert worker.get("/readyz").status_code == 200
    assert poison.state == "FAILURE"


def test_a_task_that_kills_its_whole_worker_stops_after_the_operators_restore_counted_it(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    """Under the solo pool the poison kills the worker itself: nobody but the operator's restore of the
    dead incarnation can count the loss; the next worker then refuses to run it."""
    client = redis_server.client()
    doomed = start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_POOL="solo", JOBQUEUE_MAX_WORKER_LOSSES="1")
    (poison,) = producer.send(sender, queue_name, "crash", 1)
    assert doomed.proc.wait(30) == -signal.SIGKILL
    (dead,) = broker.list_incarnations(redis_server.url, PREFIX, queues=[queue_name])
    wait_until(
        lambda: not broker.list_incarnations(redis_server.url, PREFIX, queues=[queue_name])[0].alive,
        timeout=contract.HEARTBEAT_TTL_SECONDS + 5,
        what="the dead worker's heartbeat to expire",
    )
    result = broker.restore_incarnation(redis_server.url, dead.registration.instance, PREFIX)
    assert result.restored == {queue_name: 1}
    assert client.hget(contract.losses_key(queue_name, PREFIX), poison.id) == b"1"
    start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_POOL="solo", JOBQUEUE_MAX_WORKER_LOSSES="1")
    (letter,) = wait_until(lambda: letters(client, queue_name), timeout=30, what="the poison task dead-lettered")
    assert (letter.reason, letter.task_id) == (DeadLetterReason.WORKER_LOST, poison.id)
    assert contract.REDELIVERED not in letter.message["headers"]  # kept as sent, without the restore's mark
    assert (producer.send(sender, queue_name, "noop", 1)[0].get(timeout=30)) is None


def test_with_dead_letters_off_celery_behaves_as_it_always_did(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    start_worker(queue_name, JOBQUEUE_KEY_PREFIX=PREFIX, JOBQUEUE_DEAD_LETTER_ENABLED="false")
    (failing,) = producer.send(sender, queue_name, "fail", 1)
    unknown = sender.send_task("no.such.task", queue=queue_name)
    with pytest.raises(Exception, match="failed on purpose"):
        failing.get(timeout=30)
    wait_until(lambda: unknown.state == "FAILURE", timeout=30, what="the unknown task failed")
    assert not client.exists(contract.dead_letter_key(queue_name, PREFIX))
