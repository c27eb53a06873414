"""The managed Redis and Flower run from images on the local cluster, as the operator's manifests say.

`make images` builds stand-ins for `redis:7.4` (Debian's redis-server, laid out as the official image) and
`mher/flower:2.0` (Flower from PyPI) and names them `docker.io/library/redis:7.4` and
`docker.io/mher/flower:2.0`, so the operator's manifests are exactly what a real cluster gets and the node
agent runs them with runc: Redis as the manifest's user and groups, on a read-only root filesystem, its
append-only file on the PersistentVolumeClaim, and what it persisted outlives the Pod; Flower as its
Deployment's user, serving the workers it sees.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import requests
from kubernetes import client

from jobqueue_devenv import cluster, images
from jobqueue_devenv.nodeagent import hostprocess
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.build import redis as redis_build
from tests.conftest import Kubectl
from tests.integration.operator.conftest import apply_jobqueue, hosted_operator_in, jobqueue_manifest


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory) as running:
        yield running.log


def _ready_redis_pod(core: client.CoreV1Api, namespace: str, name: str, not_uid: str = "") -> client.V1Pod:
    def probe() -> client.V1Pod | None:
        try:
            pod = core.read_namespaced_pod(f"{naming.redis(name)}-0", namespace)
        except client.ApiException:
            return None
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        return pod if ready and pod.metadata.uid != not_uid and pod.status.pod_ip else None

    return wait_until(probe, timeout=120, what=f"{name}'s Redis Pod ready")


def _ids(status: str, field: str) -> list[int]:
    """The numbers of a /proc/<pid>/status line (`Uid:`: real, effective, saved, filesystem)."""
    line = re.search(rf"^{field}:\s*(.*)$", status, re.M)
    assert line is not None, status
    return [int(n) for n in line.group(1).split()]


def _client(core: client.CoreV1Api, namespace: str, name: str, pod: client.V1Pod) -> redis.Redis:
    secret = core.read_namespaced_secret(naming.redis_secret(name), namespace).data or {}
    password = base64.b64decode(secret[naming.PASSWORD_KEY]).decode()
    return redis.Redis(host=pod.status.pod_ip, port=redis_build.PORT, password=password, socket_timeout=10)


def test_redis_runs_from_its_image_as_the_statefulset_says_and_its_data_outlives_the_pod(
    hosted_operator: Path,
    kubectl: Kubectl,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns, name = operator_namespace, f"img-{uuid.uuid4().hex[:6]}"
    managed = {"persistence": {"enabled": True, "size": "1Gi"}}
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, [{"name": "q", "replicas": 0}], broker={"managed": managed}))
    pod = _ready_redis_pod(core, ns, name)

    # From the image, under runc: no host process.
    status = pod.status.container_statuses[0]
    assert status.image == images.STAND_INS[images.REDIS.reference] == "docker.io/library/redis:7.4"
    assert status.container_id.startswith("runc://")
    assert status.image_id.startswith("sha256:")
    assert hostprocess.CONDITION not in {c.type for c in pod.status.conditions or []}

    # As whom and on what the manifest says (read from the StatefulSet, not restated here).
    template = apps.read_namespaced_stateful_set(naming.redis(name), ns).spec.template.spec
    context, container = template.security_context, template.containers[0]
    assert container.security_context.read_only_root_filesystem is True
    data = next(v for v in pod.spec.volumes if v.name == "data")
    assert data.persistent_volume_claim.claim_name == f"data-{naming.redis(name)}-0"
    script = (
        "cat /proc/1/status; echo; stat -c 'owner %u' /data/appendonlydir; stat -c 'data %g %a' /data; "
        "touch /written-to-root 2>&1 && echo root-writable || true"
    )
    said = kubectl("exec", "-n", ns, pod.metadata.name, "-c", "redis", "--", "sh", "-c", script).stdout
    assert "redis-server" in _name_line(said)
    assert _ids(said, "Uid") == [context.run_as_user] * 4
    assert _ids(said, "Gid") == [context.run_as_group] * 4
    assert context.fs_group in _ids(said, "Groups")
    assert _ids(said, "CapEff") == [0]  # capabilities: drop ALL (hex 0000000000000000)
    assert _ids(said, "NoNewPrivs") == [1]  # allowPrivilegeEscalation: false
    assert context.seccomp_profile.type == "RuntimeDefault"
    assert _ids(said, "Seccomp") == [2]  # a filter: the runtime's default profile
    assert f"owner {context.run_as_user}" in said  # Redis made its append-only folder on the volume
    assert f"data {context.fs_group} 2777" in said  # the claim's folder is the fsGroup's, setgid
    assert "Read-only file system" in said
    assert "root-writable" not in said

    # What Redis persisted (appendonly, fsync every second) is still there after the Pod is deleted.
    first = _client(core, ns, name, pod)
    first.set("survivor", "still here")
    aof = "grep -l survivor /data/appendonlydir/*.aof"
    wait_until(
        lambda: (
            kubectl("exec", "-n", ns, pod.metadata.name, "-c", "redis", "--", "sh", "-c", aof, check=False).returncode
            == 0
        ),
        timeout=60,
        what="the key in the append-only file",
    )
    first.close()
    core.delete_namespaced_pod(pod.metadata.name, ns)
    again = _ready_redis_pod(core, ns, name, not_uid=pod.metadata.uid)
    assert _client(core, ns, name, again).get("survivor") == b"still here"


def _name_line(status: str) -> str:
    line = re.search(r"^Name:\s*(.*)$", status, re.M)
    assert line is not None, status
    return line.group(1)


def test_flower_runs_from_its_image_as_the_deployment_says_and_sees_the_workers(
    hosted_operator: Path,
    kubectl: Kubectl,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns, name = operator_namespace, f"fl-{uuid.uuid4().hex[:6]}"
    managed = {"persistence": {"enabled": False}}
    queues = [{"name": "q", "replicas": 1, "pool": "solo", "concurrency": 1}]
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, queues, broker={"managed": managed}, flower={"enabled": True}))

    def ready_flower() -> client.V1Pod | None:
        selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=flower"
        pods = core.list_namespaced_pod(ns, label_selector=selector).items
        ready = [p for p in pods if any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])]
        return ready[0] if ready else None

    pod = wait_until(ready_flower, timeout=120, what=f"{name}'s Flower Pod ready (its /healthcheck answered)")
    status = pod.status.container_statuses[0]
    assert status.image == images.STAND_INS[images.FLOWER.reference] == "docker.io/mher/flower:2.0"
    assert status.container_id.startswith("runc://")
    context = apps.read_namespaced_deployment(naming.flower(name), ns).spec.template.spec.security_context
    said = kubectl("exec", "-n", ns, pod.metadata.name, "--", "cat", "/proc/1/status").stdout
    assert _ids(said, "Uid") == [context.run_as_user] * 4
    workers = f"http://{pod.status.pod_ip}:5555/workers"
    wait_until(lambda: "q@" in requests.get(workers, timeout=5).text, timeout=90, what="Flower listing q's worker")
