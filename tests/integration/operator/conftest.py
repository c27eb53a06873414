"""The operator as a real process against the local cluster, the CRD from the chart, and a real Redis."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl

REPO = Path(__file__).resolve().parents[3]
CRD_FILE = REPO / "charts" / "jobqueue-operator" / "crds" / "jobqueues.jobqueue.dev.yaml"
GROUP, VERSION, PLURAL = "jobqueue.dev", "v1alpha1", "jobqueues"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl) -> None:
    """The JobQueue CRD, applied from the chart's one source file and served."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    kubectl("wait", "--for=condition=Established", "--timeout=30s", "crd/jobqueues.jobqueue.dev")
    wait_until(lambda: kubectl("get", "jobqueues", "-A", check=False).returncode == 0, timeout=30, what="jq served")


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="module")
def operator_namespace(core: client.CoreV1Api, crd: None) -> Iterator[str]:
    """A namespace of this module's own, which the operator process of the module watches."""
    name = f"jqop-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    yield name
    core.delete_namespace(name)


@pytest.fixture(scope="module")
def operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` running as a subprocess, watching the module's namespace; yields its log file."""
    port = free_port()
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    executable = Path(sys.executable).parent / "jobqueue-operator"
    env = dict(os.environ, KUBECONFIG=local_cluster.kubeconfig, JOBQUEUE_RESYNC_SECONDS="3")
    command = [str(executable), "--namespace", operator_namespace, "--liveness", f"http://127.0.0.1:{port}/healthz"]
    command += ["--metrics-port", str(free_port())]  # its own: other operators may run beside it
    with log.open("w") as output:
        process = subprocess.Popen(
            command,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1).status == 200,
            timeout=30,
            what="the operator's liveness endpoint",
        )
        yield log
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    assert process.returncode in (0, -15), log.read_text()[-3000:]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1, used as an external broker."""
    server = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = free_port()
    directory = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen(
        [
            server,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until(lambda: socket.create_connection(("127.0.0.1", port), timeout=1), timeout=10, what="redis-server")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None
