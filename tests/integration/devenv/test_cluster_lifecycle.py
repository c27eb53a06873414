"""`make cluster-up` / `make cluster-down` as a user runs them: the CLI, real processes, real ports.

Each test here starts its own cluster in its own folder, next to the session's shared one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from jobqueue_devenv import binaries, cluster, processes

DEVENV = Path(__file__).resolve().parents[3] / "devenv"


def devenv(directory: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m jobqueue_devenv --dir DIRECTORY ARGS...` as `make` does."""
    full_env = dict(os.environ, PYTHONPATH=str(DEVENV), **(env or {}))
    return subprocess.run(
        [sys.executable, "-m", "jobqueue_devenv", "--dir", str(directory), *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def _listening(port: int) -> bool:
    return processes.port_in_use(port)


def test_up_twice_reuses_the_cluster_and_down_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    first = devenv(directory, "up")
    assert first.returncode == 0, first.stderr
    last_line = first.stdout.strip().splitlines()[-1]
    assert last_line == f"export KUBECONFIG={directory / 'kubeconfig'}"
    state = cluster.ClusterState.load(directory)
    assert state is not None
    pids = {p.pid for p in state.processes}
    assert {p.name for p in state.processes} == {
        "etcd",
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
        "cloud",
        "node-agent",
    }

    second = devenv(directory, "up")
    assert second.returncode == 0, second.stderr
    assert "already running" in second.stderr
    assert second.stdout.strip().splitlines()[-1] == last_line
    again = cluster.ClusterState.load(directory)
    assert again is not None
    assert {p.pid for p in again.processes} == pids, "the second `up` must not start new processes"

    down = devenv(directory, "down")
    assert down.returncode == 0, down.stderr
    assert not any(processes.is_running(p) for p in state.processes)
    assert not [port for port in state.ports.values() if _listening(port)]
    assert not directory.exists()

    assert "no cluster was running" in devenv(directory, "down").stderr


def test_status_says_when_nothing_runs(tmp_path: Path) -> None:
    result = devenv(tmp_path / "none", "status")
    assert result.returncode == 1
    assert "no cluster" in result.stderr


def test_a_taken_apiserver_port_is_a_one_line_error(tmp_path: Path) -> None:
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        result = devenv(tmp_path / "c", "up", env={"JQ_APISERVER_PORT": str(port)})
    assert result.returncode == 2
    assert f"error: port 127.0.0.1:{port} (JQ_APISERVER_PORT) is already in use" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "c").exists(), "nothing is left behind"


@pytest.fixture
def never_ready_assets(tmp_path: Path) -> Path:
    """A KUBEBUILDER_ASSETS folder whose kube-apiserver starts but never answers."""
    assets = tmp_path / "assets"
    assets.mkdir()
    real = binaries.find()
    for path in (real.etcd, real.kube_controller_manager, real.kube_scheduler, real.kubectl, real.helm):
        (assets / path.name).symlink_to(path)
    fake = assets / "kube-apiserver"
    fake.write_text(f"#!/bin/sh\necho $$ > {assets}/apiserver.pid\necho 'pretending to start'\nexec sleep 600\n")
    fake.chmod(0o755)
    return assets


def test_an_apiserver_that_never_gets_ready_is_reported_and_cleaned_up(
    tmp_path: Path, never_ready_assets: Path
) -> None:
    directory = tmp_path / "c"
    result = devenv(directory, "up", env={"KUBEBUILDER_ASSETS": str(never_ready_assets), "JQ_CLUSTER_TIMEOUT": "8"})
    assert result.returncode == 2
    assert "error: kube-apiserver did not become ready within 8s" in result.stderr
    assert "pretending to start" in result.stderr, "the cause quotes the component's log"
    assert "Traceback" not in result.stderr
    assert not directory.exists()
    pid = int((never_ready_assets / "apiserver.pid").read_text())
    assert not processes.pid_alive(pid), "the stuck apiserver process was stopped"
