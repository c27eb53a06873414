"""Which Pods run as host processes: only those of the one image reserved for that.

An image typo (`proj-wroker:dev`) once ran anyway, as a host process of the command, and crashed with a
`ModuleNotFoundError` that hid the typo. Now it fails to start as on any node. The managed Redis's default
image, `redis:7.4`, once ran as a host process too; now it runs from the stand-in `make images` builds, with
runc like every image. Only `devenv.invalid/host-process:latest` runs as a host process, and says so.
"""

from __future__ import annotations

from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import images
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


def _running(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    found = core.read_namespaced_pod(name, namespace)
    statuses = found.status.container_statuses or []
    return found if statuses and statuses[0].state.running is not None else None


def test_the_managed_redis_default_image_runs_from_its_stand_in(core: client.CoreV1Api, namespace: str) -> None:
    """`redis:7.4`, spelled as the operator spells it, finds the stand-in image: runc, no host process."""
    if not images.exists(images.STAND_INS[images.REDIS.reference]):
        pytest.fail("the redis:7.4 stand-in is not built: run `make images`")
    core.create_namespaced_pod(namespace, pod("redis", "redis:7.4", ["redis-server", "--port", "6379", "--save", ""]))
    found = wait_until(lambda: _running(core, namespace, "redis"), timeout=60, what="redis running")
    status = found.status.container_statuses[0]
    assert status.container_id.startswith("runc://")
    assert status.image == "docker.io/library/redis:7.4"
    assert hostprocess.CONDITION not in {c.type for c in found.status.conditions or []}


def test_another_redis_image_that_is_not_here_is_an_image_error(core: client.CoreV1Api, namespace: str) -> None:
    """Only the exact default has a stand-in: `broker.managed.image: redis:7.2` fails as on any node."""
    core.create_namespaced_pod(namespace, pod("redis-72", "redis:7.2", ["redis-server"]))
    seen: set[str] = set()
    wait_until(
        lambda: "ErrImagePull" in waiting_reasons(core, namespace, "redis-72", seen),
        timeout=60,
        what="redis-72: ErrImagePull",
    )
    status = core.read_namespaced_pod("redis-72", namespace).status.container_statuses[0]
    assert status.restart_count == 0


def test_the_reserved_image_runs_as_a_host_process_and_says_so(core: client.CoreV1Api, namespace: str) -> None:
    command = ["python", "-c", "import time; time.sleep(600)"]
    core.create_namespaced_pod(namespace, pod("on-host", hostprocess.HOST_PROCESS_IMAGE, command))

    def said() -> client.V1PodCondition | None:
        found = _running(core, namespace, "on-host")
        conditions = found.status.conditions or [] if found is not None else []
        return next((c for c in conditions if c.type == hostprocess.CONDITION), None)

    condition = wait_until(said, timeout=60, what="on-host running, with its HostProcess condition")
    assert condition.status == "True"
    assert condition.reason == "NoImageOnLocalCluster"
    assert "container main runs as a host process" in condition.message
    assert f"in place of image {hostprocess.HOST_PROCESS_IMAGE}" in condition.message
    status = core.read_namespaced_pod("on-host", namespace).status.container_statuses[0]
    assert status.container_id == "process://main"
