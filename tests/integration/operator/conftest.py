"""The operator as a real process against the local cluster, the CRD from the chart, and a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobqueue_devenv import cluster, images
from jobqueue_devenv.demo import UNPULLED_IMAGE, jobqueue_document
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.operator_process import HostOperator, host_operator
from jobqueue_devenv.paths import CRD_FILE
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl

GROUP, VERSION, PLURAL = "jobqueue.dev", "v1alpha1", "jobqueues"


@pytest.fixture(scope="session")
def crd(kubectl: Kubectl, api_client: client.ApiClient) -> None:
    """The JobQueue CRD, applied from the chart's one source file and served.

    Read through the API inside `wait_until` rather than with one `kubectl wait`: a single failed call of
    that (exit 1 once, here) errored every operator test of the session; a failed read here is "not yet",
    and a timeout names the last error."""
    kubectl("apply", "--server-side", "--force-conflicts", "-f", str(CRD_FILE))
    extensions = client.ApiextensionsV1Api(api_client)

    def established() -> bool:
        conditions = extensions.read_custom_resource_definition(f"{PLURAL}.{GROUP}").status.conditions or []
        return any(c.type == "Established" and c.status == "True" for c in conditions)

    wait_until(established, timeout=60, what=f"the {PLURAL}.{GROUP} CRD Established")
    wait_until(lambda: kubectl("get", "jobqueues", "-A", check=False).returncode == 0, timeout=30, what="jq served")


@pytest.fixture(scope="session")
def custom(api_client: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api_client)


@pytest.fixture(scope="session")
def stand_in_images() -> None:
    """The images of the managed Redis and Flower (`make images` builds their stand-ins): without them
    those Pods wait in ErrImagePull and a test times out far from the cause."""
    absent = [name for name in images.STAND_INS.values() if not images.exists(name)]
    if absent:
        pytest.fail(f"{', '.join(absent)} not in local storage: run `make images`")


@pytest.fixture(scope="module")
def operator_namespace(core: client.CoreV1Api, crd: None, stand_in_images: None) -> Iterator[str]:
    """A namespace of this module's own, which the operator process of the module watches."""
    name = f"jqop-{uuid.uuid4().hex[:8]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    # Pods (managed Redis, workers) are refused until the namespace's default ServiceAccount exists.
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=30, what="default SA")
    yield name
    core.delete_namespace(name)


@contextmanager
def hosted_operator_in(
    local_cluster: cluster.ClusterState,
    namespace: str,
    tmp_path_factory: pytest.TempPathFactory,
    *,
    tick: float | None = None,
    resync: float | None = 3,
) -> Iterator[HostOperator]:
    """`jobqueue-operator` on the host watching `namespace`, resolving Service names like a Pod (so it reaches
    a managed broker); `tick`: its --autoscale-seconds, `resync`: JOBQUEUE_RESYNC_SECONDS (None: the defaults,
    5 s and 30 s). Checks that it ended cleanly."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    args = [] if tick is None else ["--autoscale-seconds", f"{tick:g}"]
    env = {} if resync is None else {"JOBQUEUE_RESYNC_SECONDS": f"{resync:g}"}
    directory = local_cluster.directory
    with host_operator(local_cluster.kubeconfig, namespace, log, cluster_dir=directory, args=args, env=env) as running:
        yield running
    assert running.process.returncode in (0, -15), log.read_text()[-3000:]


@pytest.fixture(scope="module")
def operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` running as a subprocess, watching the module's namespace; yields its log file."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with host_operator(
        local_cluster.kubeconfig, operator_namespace, log, env={"JOBQUEUE_RESYNC_SECONDS": "3"}
    ) as running:
        yield log
    assert running.process.returncode in (0, -15), log.read_text()[-3000:]


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server on 127.0.0.1 without a password, used as an external broker."""
    with RedisServer.running(tmp_path_factory.mktemp("redis"), password=None) as server:
        yield server.url


def apply_jobqueue(kubectl: Kubectl, namespace: str, document: dict[str, Any]) -> None:
    """`kubectl apply --server-side` of a JobQueue (or any) document, as a user would."""
    kubectl("apply", "--server-side", "--force-conflicts", "-n", namespace, "-f", "-", input=yaml.safe_dump(document))


def get_jobqueue(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    """A JobQueue as the API server returns it."""
    body: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return body


def jobqueue_manifest(name: str, queues: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    """A JobQueue of the worker's built-in demo app on the node agent's reserved host-process image: its
    workers run as host processes from this checkout (docs/local-cluster.md), the image is never pulled."""
    defaults = {"image": HOST_PROCESS_IMAGE, "app": "jobqueue_worker.demo:app"}
    return jobqueue_document(name, **{**defaults, "queues": queues, **spec})


def external_jobqueue(name: str, secret: str, queues: list[dict[str, Any]]) -> dict[str, Any]:
    """A JobQueue on an external broker whose URL is key `url` of Secret `secret`; its image is never pulled
    (tests of the operator's objects, not of workers)."""
    broker = {"external": {"urlSecretRef": {"name": secret, "key": "url"}}}
    return jobqueue_document(name, image=UNPULLED_IMAGE, app="tasks.app:app", broker=broker, queues=queues)


def url_secret(core: client.CoreV1Api, namespace: str, name: str, url: str) -> None:
    """Secret `name` holding a broker URL under key `url`: created, or replaced when it exists."""
    body = {"metadata": {"name": name}, "stringData": {"url": url}}
    try:
        core.replace_namespaced_secret(name, namespace, body)
    except client.ApiException as exc:
        if exc.status != 404:
            raise
        core.create_namespaced_secret(namespace, body)
