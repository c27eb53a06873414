"""The worker's metrics directory against real processes: what a SIGKILLed worker left is removed by the
next start (a running neighbour's is kept), and with no writable temporary directory the worker says so
in one line and exits 2."""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
from pathlib import Path

import pytest

from jobqueue_devenv.processes import free_port
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_worker import metricsdir
from tests.integration.worker.conftest import WORKER, StartWorker, worker_env


def test_a_killed_workers_directory_is_removed_by_the_next_start_and_a_neighbours_is_kept(
    start_worker: StartWorker, tmp_path: Path, queue_name: str
) -> None:
    private_tmp = tmp_path / "tmp"
    private_tmp.mkdir()
    neighbour = start_worker(f"{queue_name}-n", TMPDIR=str(private_tmp))
    killed = start_worker(queue_name, TMPDIR=str(private_tmp))
    before = set(private_tmp.glob(f"{metricsdir.PREFIX}*"))
    assert len(before) == 2
    os.killpg(killed.proc.pid, signal.SIGKILL)
    killed.proc.wait(10)
    assert set(private_tmp.glob(f"{metricsdir.PREFIX}*")) == before  # a SIGKILL cannot clean up
    start_worker(queue_name, TMPDIR=str(private_tmp))
    after = set(private_tmp.glob(f"{metricsdir.PREFIX}*"))
    assert len(after) == 2
    assert len(after & before) == 1  # the neighbour's, still held; the killed worker's is gone
    assert neighbour.get("/metrics").status_code == 200


def test_unheld_directories_are_removed_and_held_ones_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / f"{metricsdir.PREFIX}old").mkdir()
    (tmp_path / f"{metricsdir.PREFIX}unlocked").mkdir()
    (tmp_path / f"{metricsdir.PREFIX}unlocked" / metricsdir.LOCK).touch()
    (tmp_path / "unrelated").mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    with metricsdir.private_directory() as mine:
        assert mine.parent == tmp_path
        assert mine.name.startswith(metricsdir.PREFIX)
        assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, "unrelated"])
        assert metricsdir.remove_stale(tmp_path) == []  # held by this process
    assert not mine.exists()


def test_no_writable_temporary_directory_is_one_line_and_exit_2(redis_server: RedisServer, tmp_path: Path) -> None:
    """A read-only /tmp and /var/tmp and working directory (a read-only root without an emptyDir)."""
    readonly = tmp_path / "ro"
    readonly.mkdir()
    env = worker_env(redis_server.url, "q-ro", free_port(host=""))
    env.pop("TMPDIR", None)
    mounts = "; ".join(
        f"mount --bind {d} {d} && mount -o remount,bind,ro {d}" for d in ("/tmp", "/var/tmp", str(readonly))
    )
    script = f'{mounts}; cd {readonly} && exec "$0"'
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, WORKER],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert done.stderr.startswith("jobqueue-worker: no writable temporary directory for the metrics files")
    assert "emptyDir" in done.stderr
