"""The whole product against the local cluster: the chart installed with Helm, the operator running,
a managed Redis and Celery workers run by the node agent, tasks sent from the host by Pod IP.

The operator is installed exactly as `make demo` installs it (`jobqueue_devenv.demo.operator`): `helm
install` of the chart, its Pod run by the node agent with the chart's own ServiceAccount and RBAC. It
watches only this session's namespaces, by pattern (`e2e-<session>-*`, so cluster-wide RBAC).
"""

from __future__ import annotations

import contextlib
import gc
import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
import yaml
from celery import Celery

from jobqueue_devenv import cluster, demo
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer

pytestmark = pytest.mark.cluster

EXAMPLES = demo.REPO / "examples"
SESSION = uuid.uuid4().hex[:6]
READY_TIMEOUT = 180  # Redis start, the workers reconnecting (see the report: a reconnect can hang until liveness)


@pytest.fixture(scope="session")
def kube(local_cluster: cluster.ClusterState) -> demo.Kube:
    return demo.Kube.for_cluster(local_cluster)


@pytest.fixture(scope="session")
def jq_operator(kube: demo.Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.RunningOperator]:
    """The chart installed with Helm and the operator watching this session's namespaces."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with demo.operator(kube, [f"e2e-{SESSION}-*"], log, f"jqe2e-{SESSION}", f"jqe2e-{SESSION}") as running:
        yield running


def _slug(text: str, limit: int) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


@dataclass
class Deployed:
    """A JobQueue the operator made Ready, and a producer connected to its Redis by Pod IP."""

    namespace: str
    name: str
    url: str
    app: Celery
    redis: redis.Redis
    body: dict[str, Any] = field(default_factory=dict)

    def queues(self) -> list[str]:
        return [q["name"] for q in self.body["spec"]["queues"]]


Deploy = Callable[[dict[str, Any]], Deployed]


def load_example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return body


def ready_condition(body: dict[str, Any]) -> dict[str, Any] | None:
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == "Ready":
            return dict(item)
    return None


class Deployer:
    """Applies JobQueues in one namespace and connects to their brokers; closes every connection after."""

    def __init__(self, kube: demo.Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.deployed: list[Deployed] = []

    def __call__(self, body: dict[str, Any]) -> Deployed:
        name = body["metadata"]["name"]
        self.kube.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=yaml.safe_dump(body))

        def ready() -> bool:
            got = self.kube.get("jobqueue", name, "-n", self.namespace)
            condition = ready_condition(got)
            if condition is None or condition["status"] != "True":
                raise AssertionError(f"Ready: {condition}")
            return True

        try:
            wait_until(ready, timeout=READY_TIMEOUT, what=f"JobQueue {self.namespace}/{name} Ready")
        except Exception as exc:
            pods = self.kube.kubectl("get", "pods", "-n", self.namespace, "-o", "wide")
            raise AssertionError(f"{exc}\n{pods}") from None
        url = demo.broker_url(self.kube, self.namespace, name)
        deployed = Deployed(self.namespace, name, url, producer.producer_app(url), redis.Redis.from_url(url), body)
        self.deployed.append(deployed)
        return deployed

    def close(self) -> None:
        gc.collect()  # results caught in reference cycles unsubscribe now, while Redis still runs
        for deployed in self.deployed:
            deployed.app.close()
            deployed.redis.close()


@contextlib.contextmanager
def namespace_for(kube: demo.Kube, label: str) -> Iterator[str]:
    """A namespace the session's operator watches; deleted (with everything in it) afterwards."""
    name = f"e2e-{SESSION}-{_slug(label, 30)}-{uuid.uuid4().hex[:4]}"
    kube.kubectl("create", "namespace", name)
    wait_until(lambda: kube.kubectl("get", "serviceaccount", "default", "-n", name), timeout=30, what="default SA")
    try:
        yield name
    finally:
        tear_down(kube, name)


def tear_down(kube: demo.Kube, namespace: str) -> None:
    """Workers first, while their Redis still answers (a worker shutting down without its broker can hang
    until its grace period ends), then everything else; returns when no Pod of the namespace is left."""
    kube.kubectl("delete", "jobqueues", "--all", "-n", namespace, "--cascade=orphan")  # the operator lets go
    kube.kubectl("delete", "deployments", "--all", "-n", namespace, "--wait=true", "--timeout=120s")
    kube.kubectl("wait", "--for=delete", "pods", "-n", namespace, "-l", "app.kubernetes.io/component!=broker",
                 "--timeout=120s")  # fmt: skip
    kube.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")


@pytest.fixture
def deploy(kube: demo.Kube, jq_operator: demo.RunningOperator, request: pytest.FixtureRequest) -> Iterator[Deploy]:
    """Apply a JobQueue in a fresh namespace of this test and wait until it is Ready."""
    with namespace_for(kube, request.node.name) as namespace:
        deployer = Deployer(kube, namespace)
        try:
            yield deployer
        finally:
            deployer.close()


@pytest.fixture(scope="module")
def deploy_module(
    kube: demo.Kube, jq_operator: demo.RunningOperator, request: pytest.FixtureRequest
) -> Iterator[Deploy]:
    """Like `deploy`, one namespace for a whole module (JobQueues shared by its tests)."""
    with namespace_for(kube, request.module.__name__.rsplit(".", 1)[-1]) as namespace:
        deployer = Deployer(kube, namespace)
        try:
            yield deployer
        finally:
            deployer.close()
