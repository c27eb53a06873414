"""Beat and Flower on a highly available managed broker, on the local cluster, from their real images (the
examples image for beat, Flower's stand-in for mher/flower:2.0): both reach the master through the
Sentinels named in the JobQueue's Secret, and go on after the master's Pod is force-deleted (beat's
scheduled tasks run again, from the new master; Flower reads the queues there).

The operator runs on the host (`hosted_operator_in`); the test reaches the members, the Sentinels and Flower
at their Pod IPs, as the host can.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest
import redis
import requests
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.demo import jobqueue_document
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.build import flower as flower_build
from jobqueue_operator.build import redis as redis_build
from jobqueue_worker import records
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in
from tests.integration.operator.sentinel_pods import agreed_master, ready_pods

NAME = "ha-clients"

CLEANUP_RUN = "speech-cleanup"
"""jobqueue_examples.speech.CLEANUP_RUN: the run id every cleanup beat sends records itself under."""


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[None]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory):
        yield


def _ready_pods(core: client.CoreV1Api, namespace: str, component: str, name: str = NAME) -> dict[str, str] | None:
    return ready_pods(core, namespace, component, name)


def _pod_ip(core: client.CoreV1Api, namespace: str, component: str) -> str | None:
    selector = f"{naming.JOBQUEUE_LABEL}={NAME},{naming.COMPONENT_LABEL}={component}"
    for pod in core.list_namespaced_pod(namespace, label_selector=selector).items:
        if any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or []):
            return str(pod.status.pod_ip)
    return None


def _page(url: str) -> str:
    try:
        response = requests.get(url, timeout=5)
    except requests.RequestException:
        return ""
    return response.text if response.ok else ""


def test_beat_and_flower_follow_the_master_of_a_highly_available_broker(
    hosted_operator: None, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str
) -> None:
    ns = operator_namespace
    document = jobqueue_document(
        NAME,
        image="jobqueue-examples:dev",
        app="jobqueue_examples.speech:app",
        env=[{"name": "CLEANUP_EVERY_SECONDS", "value": "2"}],
        broker={"managed": {"persistence": {"enabled": False}, "highAvailability": {"enabled": True}}},
        beat={"enabled": True},
        flower={"enabled": True},
        queues=[{"name": "low", "concurrency": 2, "replicas": 1}],
    )
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, document)
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=240, what="3 ready Redis members")
    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL), timeout=120, what="3 ready Sentinels")
    password = base64.b64decode(core.read_namespaced_secret(naming.redis_secret(NAME), ns).data["password"]).decode()
    first = str(wait_until(lambda: agreed_master(sentinels, password), timeout=60, what="the Sentinels agree"))

    def cleanups(member: str) -> int:
        ip = members[member]
        connection = redis.Redis(ip, redis_build.PORT, password=password, socket_timeout=3)
        try:
            return len(records.read(connection, CLEANUP_RUN, records.DONE))
        except redis.RedisError:
            return -1
        finally:
            connection.close()

    wait_until(lambda: cleanups(first) >= 2, timeout=180, what="two cleanups sent by beat and run, on the master")
    flower_ip = wait_until(lambda: _pod_ip(core, ns, naming.FLOWER), timeout=120, what="Flower ready")
    base = f"http://{flower_ip}:{flower_build.PORT}"
    wait_until(lambda: "low@" in _page(f"{base}/workers"), timeout=120, what="Flower listing the low worker")

    core.delete_namespaced_pod(first, ns, grace_period_seconds=0)
    promoted = wait_until(
        lambda: (found := agreed_master(sentinels, password)) not in (None, first) and found,
        timeout=60,
        what="the Sentinels promote another member",
    )
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=180, what="3 ready members again")
    after = cleanups(str(promoted))
    wait_until(
        lambda: cleanups(str(promoted)) >= after + 2,
        timeout=120,
        what=f"two more cleanups sent by beat and run, on the new master {promoted}",
    )

    # Flower reads the queue lengths through the Sentinels at each request of its broker page; an error
    # reading them leaves the table empty ("No queue data is available.").
    def lengths_shown() -> bool:
        page = _page(f"{base}/broker")
        return 'id="queue-table"' in page and "No queue data is available" not in page

    wait_until(lengths_shown, timeout=60, what="Flower's broker page showing queue lengths from the new master")
