"""An app's own result backend that cannot be reached, with a real Redis broker and a real `jobqueue-worker`:
the worker says so at start (its log, and next to its heartbeat in the broker, where the operator reads it),
keeps running tasks, and dead-letters each task that ran but whose result could not be stored as
`result-not-stored`, which `deadletter list` marks as run (a requeue runs it again)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_worker import contract
from jobqueue_worker.contract import DeadLetter, DeadLetterReason
from tests.integration.worker.conftest import WORKER, ProducerFor, StartWorker

APP = "tests.integration.worker.diary_app:app"
REPORT = (
    "the result backend redis://:**@127.0.0.1:1/0 cannot be reached (ConnectionError: Error 111 connecting to "
    "127.0.0.1:1. Connection refused.): tasks run but their results are not stored (dead-lettered as "
    "result-not-stored); point the app's result_backend at a Redis the workers can reach, or set the "
    "JobQueue's spec.results.backendSecretRef (it overrides the app's)"
)


def test_an_unreachable_result_backend_is_reported_and_its_tasks_are_dead_lettered_as_run(
    start_worker: StartWorker, producer_for: ProducerFor, redis_server: RedisServer, queue_name: str, tmp_path: Path
) -> None:
    worker = start_worker(queue_name, JOBQUEUE_APP=APP)

    def reported() -> list[str]:
        found = broker.list_incarnations(redis_server.url, queues=[queue_name])
        return [incarnation.result_backend_problem for incarnation in found if incarnation.alive]

    assert wait_until(lambda: reported() == [REPORT], timeout=60, what="the report next to the heartbeat")
    assert REPORT in worker.output()
    assert "secret" not in worker.output()

    diary = tmp_path / "diary.txt"
    producer_for().send_task("diary.note", args=[str(diary), "hello"], queue=queue_name)
    key = contract.dead_letter_key(queue_name)
    client = redis_server.client()
    raw = wait_until(lambda: client.lrange(key, 0, -1), timeout=90, what="the dead letter")
    [letter] = [DeadLetter.from_json(item) for item in raw]
    assert letter.reason == DeadLetterReason.RESULT_NOT_STORED
    assert letter.exception.startswith(
        "ResultNotStored: the task ran and returned, but its result could not be stored in "
        "redis://:**@127.0.0.1:1/0: ConnectionError: Error 111 connecting to 127.0.0.1:1. Connection refused."
    )
    assert diary.read_text() == "hello\n"  # the body ran, once
    assert worker.proc.poll() is None
    assert worker.sample("jobqueue_worker_dead_letters_total", reason="result-not-stored") == 1
    assert worker.sample("jobqueue_worker_tasks_total", state="failed") == 1  # as Celery reports it

    env = {"JOBQUEUE_BROKER_URL": redis_server.url, "PATH": "/usr/bin:/bin"}
    listed = subprocess.run(
        [WORKER, "deadletter", "list", "--queue", queue_name], env=env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0, listed.stderr
    [entry, summary] = listed.stdout.splitlines()
    assert " result-not-stored  diary.note[" in entry
    assert entry.endswith("(it ran: a requeue runs it again)")
    assert summary == f"1 of 1 dead letters of {queue_name}"
