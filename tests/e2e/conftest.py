"""The whole product against the local cluster: the chart installed with Helm, the operator running,
a managed Redis and Celery workers run by the node agent, tasks sent from the host by Pod IP.

Everything of ours runs from its image, as on any cluster: the operator from `jobqueue-operator:dev`,
the workers from `jobqueue-worker:dev` or, for the examples with task modules, `jobqueue-examples:dev`
(`make images` builds them; `make test` does it first). The managed Redis and Flower run from the
stand-ins `make images` builds for their default images (docs/local-cluster.md says which Pods run how).

The operator is installed as `make demo` installs it (`jobqueue_devenv.demo.operator`): `helm install`
of the chart with the image values, its Pod run by the node agent with the chart's own ServiceAccount
and RBAC. It watches only this session's namespaces, by pattern (`e2e-<session>-*`, so cluster-wide
RBAC). Applying JobQueues and tearing namespaces down is `jobqueue_devenv.deployer`, shared with the
benchmarks.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from jobqueue_devenv import cluster, demo
from jobqueue_devenv.deployer import Deployed, Deployer, namespace_for
from jobqueue_devenv.errors import DevenvError

EXAMPLES = demo.REPO / "examples"
SESSION = uuid.uuid4().hex[:6]
PREFIX = f"e2e-{SESSION}"
"""Every namespace of this session starts with it; the session's operator watches `<PREFIX>-*`."""


@pytest.fixture(scope="session")
def kube(local_cluster: cluster.ClusterState) -> demo.Kube:
    return demo.Kube.for_cluster(local_cluster)


@pytest.fixture(scope="session")
def jq_operator(kube: demo.Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.RunningOperator]:
    """The chart installed with Helm and the operator watching this session's namespaces."""
    try:
        demo.require_images()
    except DevenvError as exc:
        pytest.fail(f"{exc.cause}: {exc.remedy}")
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with demo.operator(kube, [f"{PREFIX}-*"], log, f"jqe2e-{SESSION}", f"jqe2e-{SESSION}") as running:
        yield running


Deploy = Callable[[dict[str, Any]], Deployed]


def load_example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((EXAMPLES / name).read_text())
    return body


@pytest.fixture
def deploy(kube: demo.Kube, jq_operator: demo.RunningOperator, request: pytest.FixtureRequest) -> Iterator[Deploy]:
    """Apply a JobQueue in a fresh namespace of this test and wait until it is Ready."""
    with namespace_for(kube, PREFIX, request.node.name) as namespace:
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
    with namespace_for(kube, PREFIX, request.module.__name__.rsplit(".", 1)[-1]) as namespace:
        deployer = Deployer(kube, namespace)
        try:
            yield deployer
        finally:
            deployer.close()
