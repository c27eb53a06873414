"""Which Pods run as host processes: only those of the images the local cluster truly cannot get.

An image typo (`proj-wroker:dev`) once ran anyway, as a host process of the command, and crashed with a
`ModuleNotFoundError` that hid the typo. Now it fails to start as on any node; the managed Redis's default
image still runs as a host process, and its Pod says so in its status.
"""

from __future__ import annotations

from typing import Any

from kubernetes import client

from jobqueue_devenv.nodeagent import hostprocess
from jobqueue_devenv.waiting import wait_until


def pod(name: str, image: str, command: list[str], **container: Any) -> dict[str, Any]:
    main = {"name": "main", "image": image, "command": command, **container}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": {"containers": [main]}}


def waiting_reasons(core: client.CoreV1Api, namespace: str, name: str, seen: set[str]) -> set[str]:
    for status in core.read_namespaced_pod(name, namespace).status.container_statuses or []:
        if status.state.waiting is not None:
            seen.add(status.state.waiting.reason)
    return seen


def test_an_image_typo_fails_to_start_as_the_kubelet_reports_it(core: client.CoreV1Api, namespace: str) -> None:
    """`jobqueue-worker` exists on this host, yet the Pod must not run it: its image does not exist here."""
    core.create_namespaced_pod(namespace, pod("never", "proj-wroker:dev", ["jobqueue-worker"], imagePullPolicy="Never"))
    core.create_namespaced_pod(namespace, pod("pulled", "proj-wroker:dev", ["jobqueue-worker"]))

    def never_pulled() -> client.V1ContainerStateWaiting | None:
        status = (core.read_namespaced_pod("never", namespace).status.container_statuses or [None])[0]
        return status.state.waiting if status and status.state.waiting.reason == "ErrImageNeverPull" else None

    waiting = wait_until(never_pulled, timeout=60, what="never: ErrImageNeverPull")
    assert waiting.message == 'Container image "proj-wroker:dev" is not present with pull policy of Never'
    seen: set[str] = set()
    wait_until(
        lambda: {"ErrImagePull", "ImagePullBackOff"} <= waiting_reasons(core, namespace, "pulled", seen),
        timeout=60,
        what="pulled: ErrImagePull and ImagePullBackOff in turn",
    )
    for name in ("never", "pulled"):
        found = core.read_namespaced_pod(name, namespace)
        assert found.status.phase == "Pending"
        assert found.status.container_statuses[0].restart_count == 0  # it never ran
        assert hostprocess.CONDITION not in {c.type for c in found.status.conditions or []}


def test_the_managed_redis_image_runs_as_a_host_process_and_says_so(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(namespace, pod("redis", "redis:7.4", ["redis-server", "--port", "6379", "--save", ""]))

    def said() -> client.V1PodCondition | None:
        found = core.read_namespaced_pod("redis", namespace)
        statuses = found.status.container_statuses or []
        if not statuses or statuses[0].state.running is None:
            return None
        return next((c for c in found.status.conditions or [] if c.type == hostprocess.CONDITION), None)

    condition = wait_until(said, timeout=60, what="redis running, with its HostProcess condition")
    assert condition.status == "True"
    assert condition.reason == "NoImageOnLocalCluster"
    assert "container main runs as a host process" in condition.message
    assert "redis-server" in condition.message
    assert "in place of image redis:7.4" in condition.message
    status = core.read_namespaced_pod("redis", namespace).status.container_statuses[0]
    assert status.container_id == "process://main"
