"""Real `jobqueue-worker` processes against a real Redis: results, exact-once counts, failures, retries,
metrics over HTTP, probes, warm shutdown on SIGTERM, child recycling and configuration errors."""

from __future__ import annotations

import gc
import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from celery import Celery
from celery.signals import before_task_publish

from jobqueue_devenv.processes import free_port
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer, records, sent_time
from tests.integration.worker.conftest import WORKER, StartWorker, worker_env

NOOP, SLEEP, FAIL, FLAKY, ALLOCATE = (
    f"jobqueue_worker.tasks.{kind}" for kind in ("noop", "sleep", "fail", "flaky", "allocate")
)


@pytest.fixture
def sender(redis_server: RedisServer) -> Iterator[Celery]:
    app = producer.producer_app(redis_server.url)
    yield app
    gc.collect()  # results caught in reference cycles unsubscribe now, while Redis still runs
    app.close()


def run_id() -> str:
    return uuid.uuid4().hex


def test_every_task_completes_exactly_once_with_results(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    worker = start_worker(queue_name, JOBQUEUE_CONCURRENCY="2")
    run = run_id()
    sent = producer.send(sender, queue_name, "noop", 60, priorities=(0, 3, 6, 9), run_id=run)
    sent += producer.send(sender, queue_name, "sleep", 6, priorities=(9, 0), run_id=run, kwargs={"seconds": 0.05})
    assert [result.get(timeout=60) for result in sent[-6:]] == [0.05] * 6
    wait_until(lambda: all(result.ready() for result in sent), timeout=60, what="all 66 tasks done")
    done = records.read(redis_server.client(), run, records.DONE)
    assert done == {result.id: 1 for result in sent}
    assert all(result.successful() for result in sent)

    def succeeded() -> float:
        return worker.sample("jobqueue_worker_tasks_total", state="succeeded", queue=queue_name, jobqueue="media")

    # Celery fires task_success after it stored the result: the last count can lag its result, so wait for it.
    wait_until(lambda: succeeded() >= 66, timeout=10, what="66 successes counted")
    assert succeeded() == 66


def test_failures_and_retries_are_reported(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    worker = start_worker(queue_name)
    run = run_id()
    (failing,) = producer.send(sender, queue_name, "fail", 1, run_id=run, kwargs={"message": "boom"})
    (flaky,) = producer.send(sender, queue_name, "flaky", 1, run_id=run, kwargs={"failures": 2, "backoff_seconds": 0.1})
    (hopeless,) = producer.send(
        sender, queue_name, "flaky", 1, run_id=run, kwargs={"failures": 5, "backoff_seconds": 0.05, "max_retries": 1}
    )
    assert flaky.get(timeout=30) == 3
    with pytest.raises(Exception, match="boom") as caught:
        failing.get(timeout=30)
    assert type(caught.value).__name__ == "DemoTaskError"
    with pytest.raises(Exception, match="fails on purpose"):
        hopeless.get(timeout=30)
    assert failing.state == "FAILURE"
    assert hopeless.state == "FAILURE"
    client = redis_server.client()
    assert records.read(client, run, records.STARTED) == {failing.id: 1, flaky.id: 3, hopeless.id: 2}
    assert records.read(client, run, records.DONE) == {flaky.id: 1}

    def count(task: str, state: str) -> float:
        return worker.sample("jobqueue_worker_tasks_total", task=task, state=state)

    # task_success and task_failure fire after the result is stored (what .get() returned on): wait for the
    # three final outcomes to be counted before checking every count.
    wait_until(
        lambda: count(FLAKY, "succeeded") + count(FLAKY, "failed") + count(FAIL, "failed") >= 3,
        timeout=10,
        what="the three final outcomes counted",
    )
    assert (count(FLAKY, "received"), count(FLAKY, "started"), count(FLAKY, "retried")) == (5, 5, 3)
    assert (count(FLAKY, "succeeded"), count(FLAKY, "failed")) == (1, 1)
    assert (count(FAIL, "started"), count(FAIL, "failed"), count(FAIL, "succeeded")) == (1, 1, 0)


def test_metrics_show_durations_queue_wait_and_active_tasks(
    start_worker: StartWorker, sender: Celery, queue_name: str
) -> None:
    worker = start_worker(queue_name)
    labels = {"jobqueue": "media", "queue": queue_name}
    sleeper = producer.send(sender, queue_name, "sleep", 1, kwargs={"seconds": 1.0})[0]
    noops = producer.send(sender, queue_name, "noop", 3)
    wait_until(
        lambda: worker.sample("jobqueue_worker_active_tasks", task=SLEEP, **labels) == 1,
        timeout=15,
        what="the sleep task active",
    )
    assert sleeper.get(timeout=15) == 1.0
    for result in noops:
        result.get(timeout=15)
    wait_until(
        lambda: worker.sample("jobqueue_worker_task_duration_seconds_count", task=NOOP, **labels) == 3,
        timeout=10,
        what="three noop durations",
    )
    assert worker.sample("jobqueue_worker_active_tasks", task=SLEEP) == 0
    assert worker.sample("jobqueue_worker_task_duration_seconds_sum", task=SLEEP) >= 1.0
    assert worker.sample("jobqueue_worker_task_duration_seconds_bucket", task=SLEEP, le="0.5") == 0
    # Concurrency 1: the noops waited in the queue behind the one-second sleep.
    assert worker.sample("jobqueue_worker_task_queue_wait_seconds_count", task=NOOP) == 3
    assert worker.sample("jobqueue_worker_task_queue_wait_seconds_sum", task=NOOP) >= 3 * 0.8
    assert worker.sample("jobqueue_worker_concurrency", **labels) == 1


def test_unstamped_messages_run_but_record_no_queue_wait(
    start_worker: StartWorker, sender: Celery, queue_name: str
) -> None:
    """A producer without the before_task_publish hook: the task still runs; no wait is invented."""
    worker = start_worker(queue_name)
    before_task_publish.disconnect(dispatch_uid="jobqueue_worker.sent_time.stamp")
    try:
        result = sender.send_task(NOOP, queue=queue_name)
    finally:
        before_task_publish.connect(sent_time.stamp, weak=False, dispatch_uid="jobqueue_worker.sent_time.stamp")
    result.get(timeout=15)
    wait_until(
        lambda: worker.sample("jobqueue_worker_tasks_total", task=NOOP, state="succeeded") == 1,
        timeout=10,
        what="the noop counted",
    )
    assert worker.sample("jobqueue_worker_task_queue_wait_seconds_count", task=NOOP) == 0


def test_readiness_follows_the_broker_connection(
    start_worker: StartWorker, tmp_path_factory: pytest.TempPathFactory
) -> None:
    own_redis = RedisServer(tmp_path_factory.mktemp("redis-outage"))
    own_redis.start()
    try:
        worker = start_worker(f"q-{uuid.uuid4().hex[:8]}", redis_url=own_redis.url)
        assert worker.get("/readyz").status_code == 200
        assert worker.get("/healthz").status_code == 200
        own_redis.stop()
        wait_until(lambda: worker.get("/readyz").status_code == 503, timeout=30, what="not ready without Redis")
        assert "not connected" in worker.get("/readyz").text
        assert worker.get("/healthz").status_code == 200  # a short outage is no reason to restart
        own_redis.start()  # same port and password: the worker reconnects on its own
        worker.wait_ready(timeout=60)
    finally:
        own_redis.stop()


def test_sigterm_finishes_the_running_task_and_takes_no_new_one(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    prefix = "jq-test:"
    worker = start_worker(queue_name, JOBQUEUE_KEY_PREFIX=prefix)
    prefixed_sender = producer.producer_app(redis_server.url, key_prefix=prefix)
    try:
        run = run_id()
        running, waiting = producer.send(prefixed_sender, queue_name, "sleep", 2, run_id=run, kwargs={"seconds": 2})
        client = redis_server.client()
        wait_until(
            lambda: records.read(client, run, records.STARTED, prefix) == {running.id: 1},
            timeout=15,
            what="the first sleep task started",
        )
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=30) == 0
        assert records.read(client, run, records.DONE, prefix) == {running.id: 1}
        assert records.read(client, run, records.STARTED, prefix) == {running.id: 1}
        assert running.get(timeout=5) == 2
        # The second task was never taken: it still waits in the (prefixed) queue for the next worker.
        assert client.llen(f"{prefix}{queue_name}") == 1
        assert waiting.state == "PENDING"
        assert "Warm shutdown" in worker.output()
    finally:
        prefixed_sender.close()


def test_max_tasks_per_child_recycles_children(start_worker: StartWorker, sender: Celery, queue_name: str) -> None:
    worker = start_worker(queue_name, JOBQUEUE_MAX_TASKS_PER_CHILD="2")
    for result in producer.send(sender, queue_name, "noop", 5):
        result.get(timeout=30)
    wait_until(
        lambda: worker.sample("jobqueue_worker_child_recycles_total", cause="max_tasks") == 2,
        timeout=15,
        what="two recycles after 4 of 5 tasks",
    )
    assert worker.sample("jobqueue_worker_child_recycles_total", cause="memory") == 0
    # The second recycle came before the fifth task ran, and its success is counted after its result is stored.
    wait_until(
        lambda: worker.sample("jobqueue_worker_tasks_total", state="succeeded", task=NOOP) >= 5,
        timeout=10,
        what="five successes counted",
    )
    assert worker.sample("jobqueue_worker_tasks_total", state="succeeded", task=NOOP) == 5  # counts survive recycles


def test_max_memory_per_child_recycles_children(start_worker: StartWorker, sender: Celery, queue_name: str) -> None:
    worker = start_worker(queue_name, JOBQUEUE_MAX_MEMORY_PER_CHILD_KB=str(150 * 1024))
    small = producer.send(sender, queue_name, "allocate", 1, kwargs={"megabytes": 1})[0]
    assert small.get(timeout=30) == 1024 * 1024
    big = producer.send(sender, queue_name, "allocate", 1, kwargs={"megabytes": 200})[0]
    assert big.get(timeout=30) == 200 * 1024 * 1024
    wait_until(
        lambda: worker.sample("jobqueue_worker_child_recycles_total", cause="memory") == 1,
        timeout=15,
        what="one memory recycle",
    )
    assert worker.sample("jobqueue_worker_child_recycles_total", cause="max_tasks") == 0
    # The replacement child works.
    assert producer.send(sender, queue_name, "noop", 1)[0].get(timeout=30) is None


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ({"JOBQUEUE_QUEUE": ""}, "jobqueue-worker: JOBQUEUE_QUEUE is required"),
        ({"JOBQUEUE_CONCURRENCY": "lots"}, "jobqueue-worker: JOBQUEUE_CONCURRENCY='lots': "),
        (
            {"JOBQUEUE_TIME_LIMIT_SECONDS": "600", "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS": "600"},
            "jobqueue-worker: JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS (600) must be greater than",
        ),
        ({"JOBQUEUE_APP": "no_such_tasks_module:app"}, "jobqueue-worker: JOBQUEUE_APP='no_such_tasks_module:app': "),
    ],
)
def test_bad_environment_prints_one_line_and_exits_2(
    redis_server: RedisServer, overrides: dict[str, str], expected: str
) -> None:
    env = worker_env(redis_server.url, "q-bad", free_port(host=""), **overrides)
    done = subprocess.run([WORKER], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.startswith(expected)
    assert done.stderr.count("\n") == 1
    assert "Traceback" not in done.stderr


def test_a_busy_metrics_port_is_a_clear_error(redis_server: RedisServer, start_worker: StartWorker) -> None:
    first = start_worker(f"q-{uuid.uuid4().hex[:8]}")
    env = worker_env(redis_server.url, "q-busy", first.port)
    done = subprocess.run([WORKER], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert done.stderr.startswith(f"jobqueue-worker: JOBQUEUE_METRICS_PORT={first.port}: cannot listen on")


def test_the_metrics_directory_is_private_and_removed_on_exit(
    start_worker: StartWorker, sender: Celery, queue_name: str, tmp_path: Path
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    worker = start_worker(queue_name, TMPDIR=str(private_tmp))
    producer.send(sender, queue_name, "noop", 1)[0].get(timeout=30)
    (metrics_dir,) = private_tmp.glob("jobqueue-worker-metrics-*")
    assert list(metrics_dir.glob("*.db"))  # the per-process files of multiprocess mode
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(timeout=30) == 0
    assert not metrics_dir.exists()


def test_the_hard_time_limit_fails_the_task_and_counts_it(
    start_worker: StartWorker, sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    worker = start_worker(queue_name, JOBQUEUE_TIME_LIMIT_SECONDS="1", JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS="60")
    run = run_id()
    (slow,) = producer.send(sender, queue_name, "sleep", 1, run_id=run, kwargs={"seconds": 5})
    with pytest.raises(Exception, match=r"TimeLimitExceeded|Time limit"):
        slow.get(timeout=30)
    assert records.read(redis_server.client(), run, records.DONE) == {}
    wait_until(
        lambda: worker.sample("jobqueue_worker_tasks_total", task=SLEEP, state="failed") == 1,
        timeout=10,
        what="the killed task counted as failed",
    )
    assert worker.sample("jobqueue_worker_tasks_total", task=SLEEP, state="succeeded") == 0
    assert producer.send(sender, queue_name, "noop", 1)[0].get(timeout=30) is None  # a new child took over
    # Counted once, though Celery signals this failure twice.
    assert worker.sample("jobqueue_worker_tasks_total", task=SLEEP, state="failed") == 1


def test_finished_tasks_are_counted_in_the_brokers_stats_hash(
    start_worker: StartWorker, redis_server: RedisServer, queue_name: str
) -> None:
    """What the operator's autoscaler reads (docs/worker-contract.md), written within about a second."""
    prefix = "jq-stats:"
    start_worker(queue_name, JOBQUEUE_KEY_PREFIX=prefix, JOBQUEUE_CONCURRENCY="2")
    prefixed_sender = producer.producer_app(redis_server.url, key_prefix=prefix)
    try:
        sent = producer.send(prefixed_sender, queue_name, "sleep", 5, kwargs={"seconds": 0.1})
        sent += producer.send(prefixed_sender, queue_name, "fail", 2, kwargs={"message": "counted too"})
        wait_until(lambda: all(result.ready() for result in sent), timeout=30, what="7 tasks finished")
    finally:
        prefixed_sender.close()
    client = redis_server.client()
    stats_key = f"{prefix}jobqueue:stats:{queue_name}"
    wait_until(lambda: client.hget(stats_key, "completed") == b"7", timeout=10, what="7 completions recorded")
    run_seconds = float(client.hget(stats_key, "run_seconds") or 0)
    run_seconds_sq = float(client.hget(stats_key, "run_seconds_sq") or 0)
    assert 5 * 0.1 <= run_seconds < 5
    assert 5 * 0.1 * 0.1 <= run_seconds_sq < run_seconds
