"""`kubectl logs` on the local cluster: the apiserver proxies it to the node agent's kubelet port.

The command every Kubernetes user types first: current run, `--previous`, `-c`, `-f` until the
container ends, `--tail`, for containers from images and host processes alike.
"""

from __future__ import annotations

from kubernetes import client

from jobqueue_devenv import images
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl

COUNT = "import sys, time\nfor i in range(1, 6):\n    print('line', i, flush=True)\n    time.sleep(0.3)\n"
CRASH = "import uuid\nprint('run', uuid.uuid4().hex, flush=True)\nraise SystemExit(1)\n"


def pod(name: str, restart: str, containers: list[tuple[str, str, str]]) -> dict[str, object]:
    """`containers`: (name, image, python program)."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": restart,
            "containers": [
                {"name": c, "image": image, "command": ["python", "-c", program]} for c, image, program in containers
            ],
        },
    }


def restarted(core: client.CoreV1Api, namespace: str, name: str, container: str) -> bool:
    statuses = core.read_namespaced_pod(name, namespace).status.container_statuses or []
    counts = {s.name: s.restart_count for s in statuses}
    if counts.get(container, 0) < 1:
        raise AssertionError(counts)
    return True


def test_kubectl_logs_follow_previous_container_and_tail(
    core: client.CoreV1Api, kubectl: Kubectl, namespace: str
) -> None:
    worker = images.WORKER.reference
    two = pod("two", "Always", [("steady", worker, COUNT + "time.sleep(600)\n"), ("crashing", worker, CRASH)])
    core.create_namespaced_pod(namespace, two)
    core.create_namespaced_pod(namespace, pod("follow", "Never", [("main", worker, COUNT)]))
    core.create_namespaced_pod(namespace, pod("on-host", "Never", [("main", HOST_PROCESS_IMAGE, COUNT)]))

    def running(name: str) -> bool:
        phase = core.read_namespaced_pod(name, namespace).status.phase
        if phase == "Pending":
            raise AssertionError(phase)
        return True

    wait_until(lambda: running("follow"), timeout=60, what="pod follow started")
    followed = kubectl("logs", "-f", "follow", "-n", namespace, timeout=60).stdout  # returns when the run ends
    assert followed.splitlines() == [f"line {i}" for i in range(1, 6)]

    wait_until(lambda: restarted(core, namespace, "two", "crashing"), timeout=60, what="a restart of crashing")
    previous = kubectl("logs", "two", "-c", "crashing", "--previous", "-n", namespace).stdout
    # restartCount counts a run as soon as its process is spawned, before it prints: wait for the current
    # run's line (read after --previous, so a run started in between cannot make the two the same file).
    current = wait_until(
        lambda: kubectl("logs", "two", "-c", "crashing", "-n", namespace).stdout or None,
        timeout=15,
        what="the current run's output",
    )
    assert current.startswith("run ")
    assert previous.startswith("run ")
    assert current != previous  # one file per run, as the kubelet keeps them
    wait_until(
        lambda: kubectl("logs", "two", "-c", "steady", "--tail=2", "-n", namespace).stdout == "line 4\nline 5\n",
        timeout=30,
        what="the last two lines of steady",
    )
    never = kubectl("logs", "two", "-c", "steady", "--previous", "-n", namespace, check=False)
    assert never.returncode != 0
    assert 'previous terminated container "steady" in pod "two" not found' in never.stderr

    wait_until(lambda: running("on-host", ), timeout=60, what="the host-process pod started")  # fmt: skip
    host = kubectl("logs", "-f", "on-host", "-n", namespace, timeout=60).stdout
    assert host.splitlines() == [f"line {i}" for i in range(1, 6)]
    statuses = core.read_namespaced_pod("on-host", namespace).status.container_statuses
    assert statuses[0].container_id == "process://main"  # no such image: a host process, same logs
