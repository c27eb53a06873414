"""Day two tells the truth (issue 19, points 4, 5 and 13) on the real cluster: the operator as a process,
an external Redis of this module's own, worker Pods run by the node agent, `kubectl get jq` through the real
kubectl and the `kubectl jobqueue` plugin as kubectl finds it on PATH.

- a paused JobQueue says so: ScalingActive=False AutoscalingPaused with the tasks waiting, the Scaling column,
  `paused` in the plugin;
- a stopped operator leaves a status that says it is stale: lastObservedTime stops moving and the plugin warns;
- the tasks of a renamed queue (draining) and of a queue no one serves are counted where a user looks;
- the plugin into a pipe: `top` prints one snapshot and ends, `--watch` plain blocks, and a reader that
  goes away (`| head -1`) ends it quietly.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import binaries, cluster
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator.reasons import Reason
from jobqueue_operator.scaling.decide import PAUSE_ANNOTATION
from jobqueue_worker import producer
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, apply_jobqueue, jobqueue_manifest

PLUGIN_DIR = Path(sys.executable).parent
STALE_AFTER = 45
"""The plugin's --stale-after in these tests: above the operator's 30 s refresh plus a tick, so a running
operator is never stale, and short enough not to wait the default 90 s for a stopped one."""


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A Redis of this module's own: no other test's queues show up as unserved here, nor ours there."""
    with RedisServer.running(tmp_path_factory.mktemp("redis"), password=None) as server:
        yield server


def _secret(core: client.CoreV1Api, namespace: str, url: str) -> None:
    body = {"metadata": {"name": "broker"}, "data": {"url": base64.b64encode(url.encode()).decode()}}
    core.create_namespaced_secret(namespace, body)


@pytest.fixture(scope="module")
def shared_broker(core: client.CoreV1Api, operator_namespace: str, broker: RedisServer) -> str:
    """The Secret `broker` of the module operator's namespace, naming database 1 of the module's Redis."""
    _secret(core, operator_namespace, broker.url_for(1))
    return broker.url_for(1)


def _manifest(name: str, queues: list[dict[str, Any]], paused: bool = False) -> dict[str, Any]:
    document = jobqueue_manifest(name, queues, broker={"external": {"urlSecretRef": {"name": "broker", "key": "url"}}})
    if paused:
        document["metadata"]["annotations"] = {PAUSE_ANNOTATION: "true"}
    return document


def _status(custom: client.CustomObjectsApi, namespace: str, name: str) -> dict[str, Any]:
    return dict(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name).get("status") or {})


def _condition(current: dict[str, Any], kind: str) -> dict[str, Any]:
    return next((c for c in current.get("conditions") or [] if c.get("type") == kind), {})


def _plugin_env(local_cluster: cluster.ClusterState) -> dict[str, str]:
    return dict(os.environ, KUBECONFIG=local_cluster.kubeconfig, PATH=f"{PLUGIN_DIR}:{os.environ['PATH']}")


def _jobqueue(local_cluster: cluster.ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    """`kubectl jobqueue ARGS` through the real kubectl, stdout a pipe."""
    command = [str(binaries.find().kubectl), "jobqueue", *args]
    return subprocess.run(command, capture_output=True, text=True, env=_plugin_env(local_cluster), timeout=60)


def _columns(text: str) -> dict[str, str]:
    """The first row of a table as kubectl and the plugin print it, by header: cut at the headers' own
    positions, since a cell may be empty (a field the status leaves out) and a header may hold a space."""
    header, row, *_ = text.splitlines()
    starts = [m.start() for m in re.finditer(r"(?<!\S)\S+(?: \S+)*", header)]
    names = [header[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    cells = [row[a:b].strip() for a, b in zip(starts, [*starts[1:], None], strict=True)]
    return dict(zip(names, cells, strict=True))


def _get_jq(kubectl: Kubectl, namespace: str, name: str) -> dict[str, str]:
    """`kubectl get jq NAME`'s columns, by header (what a user reads)."""
    return _columns(kubectl("get", "jq", name, "-n", namespace).stdout)


def test_a_paused_jobqueue_says_so_where_a_user_looks(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    operator: Path,
    operator_namespace: str,
    shared_broker: str,
    local_cluster: cluster.ClusterState,
) -> None:
    ns = operator_namespace
    apply_jobqueue(kubectl, ns, _manifest("held", [{"name": "held", "autoscaling": {"minReplicas": 0}}], paused=True))
    app = producer.producer_app(shared_broker)
    producer.send(app, "held", "noop", 5, ignore_result=True)

    def paused() -> dict[str, Any] | None:
        condition = _condition(_status(custom, ns, "held"), "ScalingActive")
        return condition if condition.get("reason") == Reason.AUTOSCALING_PAUSED else None

    condition = wait_until(paused, timeout=60, what="ScalingActive=False AutoscalingPaused")
    assert condition["status"] == "False"
    assert "5 tasks wait meanwhile (held 5)" in condition["message"]
    assert f"kubectl annotate jobqueue held -n {ns} {PAUSE_ANNOTATION}-" in condition["message"]
    assert _get_jq(kubectl, ns, "held")["SCALING"] == Reason.AUTOSCALING_PAUSED
    shown = _jobqueue(local_cluster, "status", "held", "-n", ns)
    assert shown.returncode == 0, shown.stderr
    assert "autoscaling: paused (AutoscalingPaused: autoscaling is paused" in shown.stdout
    top = _jobqueue(local_cluster, "top", "-n", ns, "--once")
    assert top.returncode == 0, top.stderr
    assert _columns(top.stdout)["SCALING"] == "paused"

    kubectl("annotate", "-n", ns, "jq/held", f"{PAUSE_ANNOTATION}-")
    wait_until(
        lambda: _condition(_status(custom, ns, "held"), "ScalingActive").get("status") == "True",
        timeout=60,
        what="ScalingActive=True once resumed",
    )
    kubectl("delete", "jq", "-n", ns, "held")
    app.close()


def test_the_tasks_of_a_renamed_queue_and_of_an_unserved_one_are_counted(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    broker: RedisServer,
    local_cluster: cluster.ClusterState,
    crd: None,
    tmp_path: Path,
) -> None:
    """16 long tasks wait in queue `old` when the spec renames it to `new`: the old queue drains (its worker
    is kept and runs one at a time), and its 16 tasks stay in the backlog, the BACKLOG column and the plugin
    until they are done; 3 tasks sent to a queue nothing serves are in UNSERVED and `top`."""
    ns = namespace
    _secret(core, ns, broker.url_for(2))
    fixed = {"replicas": 0, "concurrency": 1, "timeLimitSeconds": 300, "autoscaling": {"enabled": False}}
    app = producer.producer_app(broker.url_for(2))
    log = tmp_path / "operator.log"
    with host_operator(local_cluster.kubeconfig, ns, log, env={"JOBQUEUE_RESYNC_SECONDS": "3"}, timeout=90):
        apply_jobqueue(kubectl, ns, _manifest("moved", [{"name": "old", **fixed}]))
        producer.send(app, "old", "sleep", 16, kwargs={"seconds": 240}, ignore_result=True)  # none done in the test
        producer.send(app, "typo", "noop", 3, ignore_result=True)
        wait_until(lambda: _status(custom, ns, "moved").get("backlog") == 16, timeout=60, what="backlog 16 in old")

        apply_jobqueue(kubectl, ns, _manifest("moved", [{"name": "new", **fixed}]))

        def counted() -> dict[str, Any] | None:
            current = _status(custom, ns, "moved")
            draining = {q["name"]: q.get("tasks") for q in current.get("drainingQueues") or []}
            ticked = any(q["name"] == "new" and "ready" in q for q in current.get("queues") or [])  # the new spec
            together = ticked and draining == {"old": 16} and current.get("unservedTasks") == 3
            return current if together and current.get("backlog") == 16 else None

        wait_until(counted, timeout=90, what="old draining with its 16 tasks in the backlog, 3 unserved")
        columns = _get_jq(kubectl, ns, "moved")
        assert (columns["BACKLOG"], columns["UNSERVED"]) == ("16", "3")
        shown = _jobqueue(local_cluster, "status", "moved", "-n", ns)
        assert shown.returncode == 0, shown.stderr
        assert "backlog 16 (16 draining), unserved 3," in shown.stdout
        lines = shown.stdout.splitlines()
        draining = next(i for i, line in enumerate(lines) if line.startswith("Draining"))
        assert lines[draining + 2].split()[:2] == ["old", "16"]
        unserved = next(i for i, line in enumerate(lines) if line.startswith("Unserved"))
        assert lines[unserved + 2].split() == ["typo", "3"]
        top = _jobqueue(local_cluster, "top", "-n", ns, "--once")
        assert top.returncode == 0, top.stderr
        row = _columns(top.stdout)
        assert (row["DRAINING"], row["UNSERVED"]) == ("16", "3")
        kubectl("delete", "jq", "-n", ns, "moved")
    app.close()


def test_a_stopped_operator_leaves_a_status_that_says_it_is_stale(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    broker: RedisServer,
    local_cluster: cluster.ClusterState,
    crd: None,
    tmp_path: Path,
) -> None:
    """A running operator refreshes lastObservedTime even when nothing changes; stopped, the time stops and
    the plugin says the status is stale (the rest of it still reads Ready=True)."""
    ns = namespace
    _secret(core, ns, broker.url_for(3))
    stale = f"--stale-after={STALE_AFTER}"
    with host_operator(local_cluster.kubeconfig, ns, tmp_path / "operator.log", timeout=90):  # a loaded machine
        apply_jobqueue(kubectl, ns, _manifest("idle", [{"name": "idle", "autoscaling": {"minReplicas": 0}}]))
        first = wait_until(lambda: _status(custom, ns, "idle").get("lastObservedTime"), timeout=60, what="observed")
        wait_until(
            lambda: _status(custom, ns, "idle").get("lastObservedTime") != first,
            timeout=120,
            what="lastObservedTime refreshed while nothing changed",
        )
        assert "OBSERVED" in kubectl("get", "jq", "idle", "-n", ns).stdout.splitlines()[0]
        running = _jobqueue(local_cluster, "status", "idle", "-n", ns, stale)
        assert running.returncode == 0, running.stderr
        assert "warning: status" not in running.stdout, running.stdout
    last = _status(custom, ns, "idle").get("lastObservedTime")

    def warned() -> str | None:
        shown = _jobqueue(local_cluster, "status", "idle", "-n", ns, stale)
        return shown.stdout if "warning: status last observed" in shown.stdout else None

    text = wait_until(warned, timeout=150, what="the plugin to call the status stale", interval=5)
    assert "the operator may not be running" in text
    assert _status(custom, ns, "idle").get("lastObservedTime") == last, text  # it stopped moving
    top = _jobqueue(local_cluster, "top", "-n", ns, "--once", stale)
    assert f"{ns}/idle: the operator may not be running" in top.stdout.splitlines()[-1]
    kubectl("delete", "jq", "-n", ns, "idle")


@pytest.fixture(scope="module")
def piped(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    operator: Path,
    operator_namespace: str,
    shared_broker: str,
) -> Iterator[str]:
    """A JobQueue for the plugin to print into pipes, once the operator has written its status."""
    name = f"pipe-{uuid.uuid4().hex[:6]}"
    apply_jobqueue(kubectl, operator_namespace, _manifest(name, [{"name": "q", "autoscaling": {"minReplicas": 0}}]))
    wait_until(lambda: _condition(_status(custom, operator_namespace, name), "Ready"), timeout=60, what="a status")
    yield name
    kubectl("delete", "jq", "-n", operator_namespace, name)


def test_top_into_a_pipe_prints_plain_text_and_ends(
    operator_namespace: str, piped: str, local_cluster: cluster.ClusterState
) -> None:
    """Into a pipe, `top` prints one snapshot and exits; `--watch` prints plain blocks until the reader goes."""
    ns = operator_namespace
    top = _jobqueue(local_cluster, "top", "-n", ns)  # stdout is a pipe: one snapshot, then exit (timeout: 60 s)
    assert top.returncode == 0, top.stderr
    assert "\x1b" not in top.stdout
    assert top.stdout.count("NAMESPACE") == 1
    assert piped in top.stdout

    watching = subprocess.Popen(
        [str(binaries.find().kubectl), "jobqueue", "top", "-n", ns, "--watch", "--interval", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_plugin_env(local_cluster),
    )  # fmt: skip
    assert watching.stdout is not None
    assert watching.stderr is not None
    seen: list[str] = []
    while sum(line.startswith("NAMESPACE") for line in seen) < 2:
        line = watching.stdout.readline()
        assert line, f"top --watch ended early: {watching.stderr.read()}"
        seen.append(line)
    watching.stdout.close()  # the reader goes away, as `| head` does
    assert watching.wait(timeout=60) == 0
    assert "Traceback" not in watching.stderr.read()
    watching.stderr.close()
    assert not any("\x1b" in line for line in seen)


def test_status_into_a_pipe_whose_reader_left_ends_quietly(
    operator_namespace: str, piped: str, local_cluster: cluster.ClusterState
) -> None:
    """`status | head -1`, and a reader gone before anything was written (`| true`): exit 0, no traceback."""
    ns = operator_namespace
    env = _plugin_env(local_cluster)
    kubectl_path = str(binaries.find().kubectl)
    gone = subprocess.Popen(
        [kubectl_path, "jobqueue", "status", piped, "-n", ns],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    assert gone.stdout is not None
    assert gone.stderr is not None
    gone.stdout.close()  # before the plugin has even connected: its one write meets a closed pipe
    assert gone.wait(timeout=60) == 0
    assert gone.stderr.read() == ""
    gone.stderr.close()

    head = subprocess.run(
        ["bash", "-c", f"set -o pipefail; {kubectl_path} jobqueue status {piped} -n {ns} | head -1"],
        capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip
    assert head.returncode == 0, head.stderr
    assert head.stdout.startswith(f"JobQueue {ns}/{piped}: Ready=")
    assert head.stderr == ""
