"""`kubectl exec` and `kubectl port-forward` on the local cluster, as kubectl 1.36 does them.

kubectl speaks WebSockets to the apiserver, which speaks SPDY to the node agent's kubelet port; the agent
runs the command in the container (`runc exec` for a container from an image, the Pod's network namespace
for a host process) and joins port-forward streams to the Pod's own IP. Before, both answered with an
HTML page: `Error code: 501 ... Unsupported method ('POST')`.
"""

from __future__ import annotations

import queue
import re
import socket
import subprocess
import threading
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import binaries, cluster, images
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl

SERVE = ["python", "-m", "http.server", "8080"]
REDIS = ["redis-server", "--port", "6379", "--save", "", "--appendonly", "no"]


def pod(name: str, image: str, command: list[str]) -> dict[str, Any]:
    env = [{"name": "GREETING", "value": "hello from the container's env"}]
    container = {"name": "main", "image": image, "command": command, "env": env}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [container]}}


def running(core: client.CoreV1Api, namespace: str, name: str) -> str:
    """The Pod's IP once its container runs (a failed start is named in the timeout message)."""
    found = core.read_namespaced_pod(name, namespace)
    statuses = found.status.container_statuses or []
    if not statuses or statuses[0].state.running is None:
        raise AssertionError(f"{name}: {statuses[0].state if statuses else found.status.phase}")
    return str(found.status.pod_ip)


@pytest.fixture
def pods(core: client.CoreV1Api, namespace: str) -> dict[str, str]:
    """One Pod running a host process and one running from the worker image, both serving HTTP on 8080."""
    if not images.exists(images.WORKER.reference):
        pytest.fail(f"{images.WORKER.reference} is not built: run `make images`")
    created = {"on-host": HOST_PROCESS_IMAGE, "from-image": images.WORKER.reference}
    for name, image in created.items():
        core.create_namespaced_pod(namespace, pod(name, image, SERVE))
    for name in created:
        wait_until(lambda n=name: running(core, namespace, n), timeout=90, what=f"pod {name} running")
    return created


@pytest.mark.parametrize("name", ["on-host", "from-image"])
def test_exec_prints_the_output_and_exits_with_the_commands_code(
    kubectl: Kubectl, namespace: str, pods: dict[str, str], name: str
) -> None:
    done = kubectl("exec", "-n", namespace, name, "--", "sh", "-c", "echo hi; echo $GREETING; exit 3", check=False)
    assert done.stdout == "hi\nhello from the container's env\n"
    assert done.returncode == 3, done.stderr
    assert "command terminated with exit code 3" in done.stderr
    assert kubectl("exec", "-n", namespace, name, "--", "false", check=False).returncode == 1
    assert kubectl("exec", "-n", namespace, name, "--", "true").stdout == ""


@pytest.mark.parametrize("name", ["on-host", "from-image"])
def test_exec_passes_piped_stdin_and_stderr(kubectl: Kubectl, namespace: str, pods: dict[str, str], name: str) -> None:
    lines = "".join(f"line {i}\n" for i in range(2000))  # more than one frame, more than a pipe buffer
    assert kubectl("exec", "-i", "-n", namespace, name, "--", "cat", input=lines).stdout == lines
    failed = kubectl("exec", "-n", namespace, name, "--", "sh", "-c", "echo oops >&2; exit 2", check=False)
    assert (failed.stdout, failed.returncode) == ("", 2)
    assert "oops" in failed.stderr


def test_exec_runs_inside_the_image_container(kubectl: Kubectl, namespace: str, pods: dict[str, str]) -> None:
    """The image's own user and root filesystem, not the host's."""
    assert kubectl("exec", "-n", namespace, "from-image", "--", "id", "-u").stdout.strip() == "10001"
    assert kubectl("exec", "-n", namespace, "on-host", "--", "id", "-u").stdout.strip() == "0"


def test_exec_into_a_container_that_does_not_run_is_refused(
    kubectl: Kubectl, core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod("typo", "proj-wroker:dev", ["sleep", "600"]))
    wait_until(
        lambda: core.read_namespaced_pod("typo", namespace).status.container_statuses,
        timeout=60,
        what="typo's container status",
    )
    refused = kubectl("exec", "-n", namespace, "typo", "--", "true", check=False)
    assert refused.returncode == 1
    assert 'container not found ("main")' in refused.stderr


@pytest.fixture
def forward(local_cluster: cluster.ClusterState, namespace: str) -> Iterator[Any]:
    """Start `kubectl port-forward pod/NAME :PORT`; yields a function returning the local port."""
    started: list[subprocess.Popen[str]] = []

    def start(name: str, port: int) -> int:
        process = subprocess.Popen(
            [str(binaries.find().kubectl), "port-forward", "-n", namespace, f"pod/{name}", f":{port}"],
            env={"KUBECONFIG": local_cluster.kubeconfig, "PATH": "/usr/bin:/bin"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started.append(process)
        lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or []], daemon=True).start()

        def local_port() -> int | None:
            line = lines.get(timeout=1)
            found = re.match(r"Forwarding from 127\.0\.0\.1:(\d+) -> " + str(port), line)
            return int(found.group(1)) if found else None

        return wait_until(local_port, timeout=60, what=f"kubectl port-forward to {name}:{port} listening")

    yield start
    for process in started:
        process.terminate()
        process.wait(30)


@pytest.mark.parametrize("name", ["on-host", "from-image"])
def test_port_forward_reaches_the_pods_own_port(
    kubectl: Kubectl, namespace: str, pods: dict[str, str], forward: Any, name: str
) -> None:
    # "Running" is the process started, not yet listening (a loaded machine takes seconds to start Python),
    # and kubectl gives up a forwarding whose first connection the Pod refuses: wait for the server first.
    probe = "import socket; socket.create_connection(('127.0.0.1', 8080), 2).close()"
    wait_until(
        lambda: kubectl("exec", "-n", namespace, name, "--", "python", "-c", probe, check=False).returncode == 0,
        timeout=60,
        what=f"the server in {name} listening",
    )
    local = forward(name, 8080)
    for _ in range(3):  # one connection after another over the same forwarding
        with urllib.request.urlopen(f"http://127.0.0.1:{local}/", timeout=30) as response:
            assert response.status == 200
            assert b"Directory listing" in response.read()


def test_port_forward_to_the_managed_redis_stand_in(core: client.CoreV1Api, namespace: str, forward: Any) -> None:
    """A redis:7.4 Pod (the stand-in image `make images` builds) answers PING through it, on its 127.0.0.1."""
    core.create_namespaced_pod(namespace, pod("redis", "redis:7.4", REDIS))
    wait_until(lambda: running(core, namespace, "redis"), timeout=60, what="redis running")
    local = forward("redis", 6379)
    with socket.create_connection(("127.0.0.1", local), timeout=30) as connection:
        connection.sendall(b"PING\r\n")
        assert connection.recv(100) == b"+PONG\r\n"


@pytest.mark.parametrize("name", ["on-host", "from-image"])
def test_exec_with_a_terminal(
    local_cluster: cluster.ClusterState, namespace: str, pods: dict[str, str], name: str
) -> None:
    """`kubectl exec -it`: the command gets a terminal of kubectl's size. kubectl wants a terminal on its own
    stdin, so `script` gives it one (of 33 rows, 111 columns)."""
    # kubectl sends its size on the resize stream as the streams open; the agent waits for it (up to 1 s) before
    # it starts the command, and a resize can still land a moment later under load: poll for it, up to 5 s.
    poll = 'test -t 0 || exit 9; for i in $(seq 50); do s=$(stty size); [ "$s" = "33 111" ] && break; sleep 0.1; done'
    kubectl = f"{binaries.find().kubectl} exec -it -n {namespace} {name} -- sh -c '{poll}; echo $s; exit 4'"
    done = subprocess.run(
        ["script", "-qec", f"stty rows 33 cols 111; {kubectl}", "/dev/null"],
        env={"KUBECONFIG": local_cluster.kubeconfig, "PATH": "/usr/bin:/bin", "TERM": "dumb"},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "33 111" in done.stdout, done
    assert done.returncode == 4, done
