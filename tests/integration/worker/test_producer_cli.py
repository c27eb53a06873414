"""`jobqueue-worker send` against real trouble: a broker restart during `--wait` is waited out; a broker
that stays down, refuses connections or whose host does not resolve gives one line, never a traceback."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

from jobqueue_devenv.processes import free_port
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import records
from tests.integration.worker.conftest import WORKER, StartWorker


def send_command(url: str, *args: str) -> list[str]:
    return [WORKER, "send", "--broker-url", url, *args]


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("JOBQUEUE_")}


def one_line(stderr: str) -> str:
    assert stderr.count("\n") == 1, stderr
    assert "Traceback" not in stderr
    return stderr


def test_send_wait_rides_out_a_broker_restart(start_worker: StartWorker, tmp_path: Path, queue_name: str) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    try:
        worker = start_worker(queue_name, redis_url=server.url)
        run = uuid.uuid4().hex
        command = send_command(server.url, "--queue", queue_name, "--task", "sleep", "--arg", "seconds=0.2")
        command += ["--count", "15", "--run-id", run, "--wait", "120"]
        sending = subprocess.Popen(command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = server.client()
        wait_until(lambda: len(records.read(client, run, records.DONE)) >= 3, timeout=30, what="three tasks done")
        server.stop()  # SIGTERM: Redis writes its append-only file and exits
        wait_until(lambda: worker.get("/readyz").status_code == 503, timeout=30, what="the worker to lose Redis")
        server.start()  # same port, same data
        out, err = sending.communicate(timeout=120)
        assert sending.returncode == 0, out + err
        assert err == ""
        assert out.splitlines()[-1].startswith("15/15 done in ")
        assert len(records.read(server.client(), run, records.DONE)) == 15
        # A task cut off by the restart is given back at once (not after the one-hour visibility timeout),
        # which is what lets all 15 finish in time; say whether this run had one.
        print("given back:", "gave back 1 messages" in worker.output())
    finally:
        server.stop()


def test_a_broker_that_stays_down_during_the_wait_is_one_line(tmp_path: Path, queue_name: str) -> None:
    with RedisServer.running(tmp_path / "redis") as server:
        command = send_command(server.url, "--queue", queue_name, "--count", "2", "--wait", "4")
        sending = subprocess.Popen(command, env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        assert sending.stdout is not None
        assert sending.stdout.readline().startswith("sent 2 noop tasks")
        server.stop()
        out, err = sending.communicate(timeout=60)
    assert sending.returncode == 1
    assert out.startswith("0/2 done in ")
    assert one_line(err).startswith(f"jobqueue-worker send: cannot reach the broker redis://127.0.0.1:{server.port}:")


def test_a_refused_connection_is_one_line() -> None:
    port = free_port(host="")
    url = f"redis://:pw@127.0.0.1:{port}/0"
    done = subprocess.run(
        send_command(url, "--queue", "q"), env=clean_env(), capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 1
    assert "Connection refused" in one_line(done.stderr)
    assert "pw" not in done.stderr


def test_a_host_that_does_not_resolve_is_one_line_with_the_fix() -> None:
    url = "redis://:secret@media-redis.apps.svc:6379/0"
    done = subprocess.run(
        send_command(url, "--queue", "q"), env=clean_env(), capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 1
    line = one_line(done.stderr)
    assert "the host media-redis.apps.svc does not resolve from here" in line
    assert "kubectl -n apps port-forward svc/media-redis 6379" in line
    assert "secret" not in line
