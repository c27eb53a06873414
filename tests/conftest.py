"""Fixtures shared by every tier: the local cluster (one per test session) and a namespace per test.

The cluster is the real thing: etcd, kube-apiserver, kube-controller-manager, kube-scheduler and the
node agent, started by `jobqueue_devenv`. When KUBECONFIG points at a cluster that `make cluster-up`
started, the tests use it and leave it running; otherwise the session starts its own and stops it.

The modules that need several nodes (they kill, drain and cordon them) share one three-node cluster of
their own (`three_nodes`): pytest-xdist runs them in one worker, one after the other (THREE_NODE_MODULES).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final

import pytest
from kubernetes import client, config

from jobqueue_devenv import binaries, cluster, nodes
from jobqueue_devenv.deployer import slug
from jobqueue_devenv.paths import REPO
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator.nodes import OUT_OF_SERVICE_TAINT


def _cluster_from_kubeconfig() -> cluster.ClusterState | None:
    """The running `make cluster-up` cluster KUBECONFIG points at, if it does."""
    kubeconfig = os.environ.get("KUBECONFIG")
    if not kubeconfig:
        return None
    state = cluster.ClusterState.load(Path(kubeconfig).parent)
    if state is None or not cluster.is_healthy(state):
        return None
    return state


@pytest.fixture(scope="session")
def local_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ClusterState]:
    """One running local cluster for the whole session."""
    reused = _cluster_from_kubeconfig()
    if reused is not None:
        yield reused
        return
    directory = tmp_path_factory.mktemp("cluster")
    state, _ = cluster.up(directory, binaries.find())
    try:
        yield state
    finally:
        cluster.down(directory)


THREE_NODES: Final = 3
THREE_NODE_MODULES: Final = (
    "tests/integration/devenv/test_multinode.py",
    "tests/integration/operator/test_lost_node.py",
    "tests/integration/operator/test_spread.py",
    "tests/e2e/node_faults/test_node_faults.py",
    "tests/e2e/broker_faults/test_broker_faults.py",
)
"""The modules that use `three_nodes`: one xdist scope (`pytest_xdist_make_scheduler`), so one worker runs
them all on one three-node cluster instead of each starting its own."""
THREE_NODES_SCOPE: Final = "three-nodes"


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """`--dist loadfile`, with the THREE_NODE_MODULES as one file: they go to one worker together."""
    if config.getoption("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling  # type: ignore[import-untyped]

    class ThreeNodesTogether(LoadFileScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return THREE_NODES_SCOPE if path in THREE_NODE_MODULES else path

    return ThreeNodesTogether(config, log)


@pytest.fixture(scope="session")
def three_node_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[cluster.ClusterState]:
    """The session's three-node cluster: the one KUBECONFIG points at if it has three nodes or more (then
    left running), else one started here (and stopped at the end)."""
    reused = _cluster_from_kubeconfig()
    if reused is not None and len(reused.node_names) >= THREE_NODES:
        yield reused
        return
    directory = tmp_path_factory.mktemp("three-nodes")
    state, _ = cluster.up(directory, binaries.find(), nodes=THREE_NODES)
    try:
        yield state
    finally:
        # The agents' and control plane's logs outlive the cluster (its folder goes), for a failure's story.
        shutil.copytree(directory / "logs", tmp_path_factory.getbasetemp() / "three-nodes-logs", dirs_exist_ok=True)
        cluster.down(directory)


@pytest.fixture(scope="module")
def three_nodes(
    three_node_cluster: cluster.ClusterState, request: pytest.FixtureRequest
) -> Iterator[cluster.ClusterState]:
    """The three-node cluster for one module, healed afterwards for the next: every node killed is started
    again (empty, as after a reboot), cordons and the out-of-service taint are taken off."""
    module = Path(request.path).resolve().relative_to(REPO).as_posix()
    assert module in THREE_NODE_MODULES, f"{module} uses three_nodes: add it to THREE_NODE_MODULES in tests/conftest.py"
    yield three_node_cluster
    heal(three_node_cluster)


def heal(state: cluster.ClusterState) -> None:
    """Every node of `state` running, schedulable and without the out-of-service taint."""
    directory = Path(state.directory)
    for name in nodes.names(directory):
        if not nodes.agent_running(directory, name):
            nodes.start(directory, name)
    env = dict(os.environ, KUBECONFIG=state.kubeconfig)
    kubectl = str(binaries.find().kubectl)
    for name in nodes.names(directory):
        for command in (["uncordon", name], ["taint", "nodes", name, f"{OUT_OF_SERVICE_TAINT}-"]):
            subprocess.run([kubectl, *command], env=env, capture_output=True, check=False)  # absent: fine


@pytest.fixture(scope="session")
def api_client(local_cluster: cluster.ClusterState) -> client.ApiClient:
    return config.new_client_from_config(config_file=local_cluster.kubeconfig)


@pytest.fixture(scope="session")
def core(api_client: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api_client)


@pytest.fixture(scope="session")
def apps(api_client: client.ApiClient) -> client.AppsV1Api:
    return client.AppsV1Api(api_client)


@pytest.fixture
def namespace(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its default ServiceAccount in place; deleted afterwards."""
    name = f"t-{slug(request.node.name, 40)}-{uuid.uuid4().hex[:6]}"
    core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    # Pods are refused until the controller-manager has created the namespace's default ServiceAccount.
    wait_until(
        lambda: core.read_namespaced_service_account("default", name),
        timeout=30,
        what=f"ServiceAccount {name}/default",
    )
    yield name
    core.delete_namespace(name)


Kubectl = Callable[..., subprocess.CompletedProcess[str]]


class CommandFailed(subprocess.CalledProcessError):
    """A command's non-zero exit that shows what it printed on stderr (CalledProcessError does not)."""

    def __str__(self) -> str:
        return f"{super().__str__()}\nstderr: {(self.stderr or '').strip()[-2000:]}"


def _checked(result: subprocess.CompletedProcess[str], check: bool) -> subprocess.CompletedProcess[str]:
    if check and result.returncode != 0:
        raise CommandFailed(result.returncode, result.args, result.stdout, result.stderr)
    return result


@pytest.fixture(scope="session")
def kubectl(local_cluster: cluster.ClusterState) -> Kubectl:
    """Run the kubectl that matches the cluster's version; raises on a non-zero exit."""
    path = binaries.find().kubectl
    env = dict(os.environ, KUBECONFIG=local_cluster.kubeconfig)

    def run(
        *args: str, input: str | None = None, check: bool = True, **kwargs: Any
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([str(path), *args], env=env, input=input, capture_output=True, text=True, **kwargs)
        return _checked(result, check)

    return run


def helm(*args: str, kubeconfig: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run the helm of `make binaries` in the repository; raises on a non-zero exit unless check=False.
    With `kubeconfig`, KUBECONFIG is its whole environment (no HELM_* or other settings of the caller)."""
    env = {"KUBECONFIG": kubeconfig} if kubeconfig else None
    command = [str(binaries.find().helm), *args]
    return _checked(subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO), check)


CLUSTER_FOLDERS = ("integration/devenv", "integration/operator", "e2e")
"""Folders of tests that all need the local cluster (elsewhere a test marks itself)."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Set the `cluster` marker by folder, once, instead of in every file."""
    root = Path(__file__).parent
    folders = [root / folder for folder in CLUSTER_FOLDERS]
    for item in items:
        if any(folder in Path(item.path).parents for folder in folders):
            item.add_marker(pytest.mark.cluster)
