"""Beat and Flower on a Redis Sentinel broker, exactly as the operator starts them (the command and arguments
of build/beat.py and build/flower.py), against three redis-server and three Sentinel processes
(`jobqueue_devenv.sentinel_process`) that monitor the master under a name of their own, given to the clients
as the JobQueue's Secret would (JOBQUEUE_BROKER_MASTER_NAME): the external Sentinel path."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator.build import flower
from jobqueue_operator.models import JobQueue
from jobqueue_worker import producer
from jobqueue_worker.contract import Env
from tests.integration.worker.conftest import WORKER, StartWorker

MASTER_NAME = "orders-broker"
"""Not contract.SENTINEL_MASTER_NAME: the clients find the master only through JOBQUEUE_BROKER_MASTER_NAME."""


@pytest.fixture
def group(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelGroup]:
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel"), master_name=MASTER_NAME) as started:
        yield started


Start = Callable[[list[str], dict[str, str], Path], subprocess.Popen[bytes]]


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Start]:
    """Start a process group logging to `log`; all stopped at test end."""
    started: list[subprocess.Popen[bytes]] = []

    def run(command: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as sink:
            proc = subprocess.Popen(
                command, env=env, cwd=tmp_path, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
            )
        started.append(proc)
        return proc

    yield run
    for proc in started:
        stop_group(proc)


def clean_env(**values: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith(("JOBQUEUE_", "FLOWER_"))}
    return {**env, **values}


def beat_command(jq: JobQueue) -> list[str]:
    """The beat container's command and arguments, with the worker's console script for `jobqueue-worker`."""
    from jobqueue_operator.build import beat

    container = beat.deployment(jq)["spec"]["template"]["spec"]["containers"][0]
    command = [WORKER if part == "jobqueue-worker" else part for part in container["command"]]
    start = command.index(WORKER)  # no dumb-init on the host
    return [*command[start:], *container["args"]]


def a_jobqueue() -> JobQueue:
    return JobQueue.from_body(
        {
            "apiVersion": "jobqueue.dev/v1alpha1",
            "kind": "JobQueue",
            "metadata": {"name": "media", "namespace": "default", "uid": "u1"},
            "spec": {"image": "example/app:1", "app": "beatapp:app", "queues": [{"name": "q"}]},
        }
    )


def test_beat_sends_its_schedule_through_the_sentinels_and_after_a_failover(
    group: SentinelGroup, start: Start, tmp_path: Path
) -> None:
    queue = f"beat-{uuid.uuid4().hex[:8]}"
    (tmp_path / "beatapp.py").write_text(
        textwrap.dedent(f"""
            from celery import Celery
            app = Celery("beatapp")
            app.conf.beat_schedule = {{
                "tick": {{"task": "jobqueue_worker.tasks.noop", "schedule": 0.5, "options": {{"queue": "{queue}"}}}},
            }}
        """)
    )
    command = [
        *(
            part if "celerybeat-schedule" not in part else str(tmp_path / "schedule")
            for part in beat_command(a_jobqueue())
        )
    ]
    env = clean_env(
        **{Env.APP: "beatapp:app", Env.BROKER_URL: group.sentinel_url(), Env.BROKER_MASTER_NAME: MASTER_NAME}
    )
    log = tmp_path / "beat.log"
    proc = start(command, env, log)

    def sent() -> int:
        return int(group.master().client().llen(queue))

    wait_until(lambda: sent() >= 3, timeout=60, what=f"beat's sends on the master ({log})")
    old = group.kill_master()
    group.wait_for_new_master(old)
    after_failover = sent()
    wait_until(lambda: sent() >= after_failover + 3, timeout=60, what=f"beat's sends on the new master ({log})")
    assert proc.poll() is None, log.read_text()


def test_beat_refuses_a_missing_app_in_one_line(start: Start, tmp_path: Path) -> None:
    result = subprocess.run(
        beat_command(a_jobqueue()), env=clean_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "jobqueue-worker beat: JOBQUEUE_APP and JOBQUEUE_BROKER_URL must be set"


def test_flower_reads_queues_and_sees_a_worker_through_the_sentinels_and_after_a_failover(
    group: SentinelGroup, start: Start, start_worker: StartWorker, tmp_path: Path
) -> None:
    container = flower.deployment(a_jobqueue())["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][0] == "python"
    port = free_port()
    args = [arg if not arg.startswith("--port=") else f"--port={port}" for arg in container["args"]]
    env = clean_env(
        **{Env.BROKER_URL: group.sentinel_url(), Env.BROKER_MASTER_NAME: MASTER_NAME},
        FLOWER_UNAUTHENTICATED_API="true",
        FLOWER_ADDRESS="127.0.0.1",
    )
    log = tmp_path / "flower.log"
    proc = start([sys.executable, *container["command"][1:], *args], env, log)
    base = f"http://127.0.0.1:{port}"

    def get(path: str) -> requests.Response | None:
        try:
            return requests.get(base + path, timeout=5)
        except requests.RequestException:
            return None

    wait_until(lambda: (r := get("/healthcheck")) is not None and r.ok, timeout=60, what=f"Flower up ({log})")
    queue = f"flower-{uuid.uuid4().hex[:8]}"
    worker = start_worker(queue, redis_url=group.sentinel_url(), **{Env.BROKER_MASTER_NAME: MASTER_NAME})
    sender = producer.producer_app(group.sentinel_url(), master_name=MASTER_NAME)
    try:

        def lengths() -> dict[str, int]:
            response = get("/api/queues/length")
            if response is None or not response.ok:
                return {}
            return {entry["name"]: entry["messages"] for entry in response.json()["active_queues"]}

        def workers() -> set[str]:
            response = get("/api/workers?refresh=1")
            return set(response.json()) if response is not None and response.ok else set()

        # The worker's remote-control replies go through the broker: Flower sees it only through the master.
        name = f"{queue}@worker-{queue}-{worker.port}"  # settings.nodename, with the conftest's POD_NAME
        wait_until(lambda: name in workers(), timeout=90, what=f"Flower sees the worker ({log})")
        assert queue in lengths(), log.read_text()

        stop_group(worker.proc)  # the tasks sent next stay in the queue
        old = group.kill_master()
        group.wait_for_new_master(old)
        producer.send(sender, queue, "noop", 2, ignore_result=True)
        wait_until(lambda: lengths().get(queue, 0) >= 2, timeout=60, what=f"Flower reads the new master ({log})")
        assert proc.poll() is None, log.read_text()
    finally:
        sender.close()
