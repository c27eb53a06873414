"""A local cluster of three nodes: each its own Node, Lease, Pod addresses and containers; Services and volumes that
belong to no node; a node's power cut (`nodes.kill`) and reboot (`nodes.start`); `kubectl drain` through the
eviction API with a PodDisruptionBudget.

The three-node cluster is the one the three-node modules share (tests/conftest.py `three_nodes`).
"""

from __future__ import annotations

import datetime
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from jobqueue_devenv import binaries, cluster, images, nodes, processes
from jobqueue_devenv.nodeagent import layout, node, runc
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.waiting import wait_until

FIRST, SECOND, THIRD = layout.node_names(3)
SERVE = ["python", "-m", "http.server", "8080"]


@pytest.fixture(scope="module")
def api(three_nodes: cluster.ClusterState) -> client.ApiClient:
    return config.new_client_from_config(config_file=three_nodes.kubeconfig)


@pytest.fixture(scope="module")
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def ns(core: client.CoreV1Api, request: pytest.FixtureRequest) -> Iterator[str]:
    name = f"mn-{request.node.name[5:30].replace('_', '-').strip('-')}-{uuid.uuid4().hex[:5]}"
    core.create_namespace({"metadata": {"name": name}})
    wait_until(lambda: core.read_namespaced_service_account("default", name), timeout=60, what="default SA")
    yield name
    core.delete_namespace(name)


def kubectl(state: cluster.ClusterState, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"KUBECONFIG": state.kubeconfig, "PATH": "/usr/bin:/bin"}
    return subprocess.run(
        [str(binaries.find().kubectl), *args], env=env, capture_output=True, text=True, timeout=180, check=False
    )


def pod(name: str, command: list[str], node_name: str | None = None, **spec: Any) -> dict[str, Any]:
    """A Pod from the worker image (a host process with `image=HOST_PROCESS_IMAGE`), on `node_name` if given."""
    container = {"name": "main", "image": images.WORKER.reference, "command": command, "imagePullPolicy": "Never"}
    container.update(spec.pop("container", {}))
    body: dict[str, Any] = {
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"terminationGracePeriodSeconds": 1, "containers": [container], **spec},
    }
    if node_name is not None:
        body["spec"]["nodeSelector"] = {"kubernetes.io/hostname": node_name}
    return body


def running_on(core: client.CoreV1Api, ns: str, name: str) -> str | None:
    """The node a Ready Pod runs on, or None."""
    found = core.read_namespaced_pod(name, ns)
    ready = any(c.type == "Ready" and c.status == "True" for c in found.status.conditions or [])
    return str(found.spec.node_name) if ready and found.metadata.deletion_timestamp is None else None


def gone(core: client.CoreV1Api, ns: str, name: str) -> bool:
    try:
        core.read_namespaced_pod(name, ns)
    except ApiException as exc:
        return exc.status == 404
    return False


def serve_on(core: client.CoreV1Api, ns: str, node_name: str) -> str:
    """A web server Pod on `node_name` behind the Service `web`; returns the Service's ClusterIP."""
    core.create_namespaced_pod(ns, pod("web", SERVE, node_name))
    service = {
        "metadata": {"name": "web"},
        "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 8080}]},
    }
    created = core.create_namespaced_service(ns, service)
    wait_until(lambda: running_on(core, ns, "web") == node_name, timeout=90, what=f"web Ready on {node_name}")
    return str(created.spec.cluster_ip)


def http_status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=5) as response:
        return int(response.status)


def cgroup_pids(parent: str) -> set[int]:
    """Every process in a node's cgroup (v2), its containers' sub-cgroups included."""
    pids: set[int] = set()
    for procs in (runc.unified_root() / parent).rglob("cgroup.procs"):
        pids |= {int(line) for line in procs.read_text().split()}
    return pids


def renewed(coordination: client.CoordinationV1Api, name: str) -> datetime.datetime:
    return coordination.read_namespaced_lease(name, "kube-node-lease").spec.renew_time  # type: ignore[no-any-return]


def test_three_nodes_are_ready_each_with_its_own_pod_addresses_and_lease(
    three_nodes: cluster.ClusterState, core: client.CoreV1Api, api: client.ApiClient
) -> None:
    assert three_nodes.node_names == [FIRST, SECOND, THIRD]
    assert nodes.names(Path(three_nodes.directory)) == [FIRST, SECOND, THIRD]
    found = {n.metadata.name: n for n in core.list_node().items}
    assert sorted(found) == [FIRST, SECOND, THIRD]
    cidrs = {name: n.spec.pod_cidr for name, n in found.items()}
    assert len(set(cidrs.values())) == 3, cidrs
    for name, item in found.items():
        assert any(c.type == "Ready" and c.status == "True" for c in item.status.conditions)
        lease = client.CoordinationV1Api(api).read_namespaced_lease(name, "kube-node-lease")
        assert lease.spec.holder_identity == name
        assert lease.spec.lease_duration_seconds == node.LEASE_SECONDS
    assert found[SECOND].status.daemon_endpoints.kubelet_endpoint.port != (
        found[THIRD].status.daemon_endpoints.kubelet_endpoint.port
    ), "a kubelet port per node"


def test_a_service_on_node_3_answers_a_pod_on_node_2_and_the_host(
    three_nodes: cluster.ClusterState, core: client.CoreV1Api, ns: str
) -> None:
    cluster_ip = serve_on(core, ns, THIRD)
    fetch = "import urllib.request as u; print('answer', u.urlopen('http://web/', timeout=5).status, flush=True)"
    core.create_namespaced_pod(ns, pod("client", ["sh", "-c", f'python -c "{fetch}"; exec sleep 3600'], SECOND))
    wait_until(lambda: running_on(core, ns, "client") == SECOND, timeout=90, what="client Ready on node 2")
    assert core.read_namespaced_pod("client", ns).status.pod_ip != core.read_namespaced_pod("web", ns).status.pod_ip

    # kubectl logs and exec of a Pod on node 2 go through node 2's own kubelet port.
    logs = wait_until(
        lambda: "answer 200" in (out := kubectl(three_nodes, "logs", "-n", ns, "client").stdout) and out,
        timeout=60,
        what="the client's answer in kubectl logs",
    )
    assert "answer 200" in logs
    done = kubectl(
        three_nodes, "exec", "-n", ns, "client", "--", "python", "-c", fetch.replace("web/", f"web.{ns}.svc/")
    )
    assert done.returncode == 0, done.stderr
    assert "answer 200" in done.stdout
    # The host reaches the ClusterIP itself (the cloud process owns it, on no node).
    assert http_status(f"http://{cluster_ip}/") == 200


def test_a_killed_node_goes_silent_at_once_and_comes_back_empty(
    three_nodes: cluster.ClusterState, core: client.CoreV1Api, api: client.ApiClient, ns: str
) -> None:
    directory = Path(three_nodes.directory)
    second = layout.NodeLayout.load(layout.agent_folder(directory, SECOND))
    assert second is not None
    cluster_ip = serve_on(core, ns, THIRD)
    core.create_namespaced_pod(ns, pod("contained", ["sleep", "3600"], SECOND))
    core.create_namespaced_pod(ns, pod("hosted", ["sleep", "3600"], SECOND, container={"image": HOST_PROCESS_IMAGE}))
    # A StatefulSet's Pod whose volume is a "network disk": preferably on node 2, allowed anywhere.
    keep = "cat /data/note 2>/dev/null || echo kept-on-the-disk > /data/note; echo started; exec sleep 3600"
    template = pod("data", ["sh", "-c", keep], container={"volumeMounts": [{"name": "data", "mountPath": "/data"}]})
    prefer = {"weight": 100, "preference": {"matchExpressions": [
        {"key": "kubernetes.io/hostname", "operator": "In", "values": [SECOND]}
    ]}}  # fmt: skip
    template["spec"]["affinity"] = {"nodeAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [prefer]}}
    claim = {
        "metadata": {"name": "data"},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }
    client.AppsV1Api(api).create_namespaced_stateful_set(
        ns,
        {
            "metadata": {"name": "data"},
            "spec": {
                "serviceName": "data",
                "replicas": 1,
                "selector": {"matchLabels": {"app": "data"}},
                "template": template,
                "volumeClaimTemplates": [claim],
            },
        },
    )
    for name in ("contained", "hosted", "data-0"):
        wait_until(lambda n=name: running_on(core, ns, n) == SECOND, timeout=90, what=f"{name} Ready on node 2")
    wait_until(lambda: "started" in kubectl(three_nodes, "logs", "-n", ns, "data-0").stdout, timeout=30, what="written")
    old = cgroup_pids(second.cgroup_parent)
    reloaded = cluster.ClusterState.load(directory)  # an earlier module may have rebooted node 2
    assert reloaded is not None
    agent = reloaded.agent(SECOND)
    assert agent is not None
    assert agent.pid in old
    assert len(old) >= 5, "the agent, runc and the containers, the host process"
    coordination = client.CoordinationV1Api(api)

    nodes.kill(directory, SECOND)
    killed_at = datetime.datetime.now(datetime.UTC)

    wait_until(lambda: not any(processes.pid_alive(pid) for pid in old), timeout=10, what="node 2's processes gone")
    assert runc.node_cgroup_empty(second.cgroup_parent)
    assert not nodes.agent_running(directory, SECOND)
    assert dict(nodes.listing(directory))[SECOND] == "off"
    assert cluster.is_healthy(cluster.ClusterState.load(directory))  # type: ignore[arg-type]
    # Nothing told the API server: the Pods of node 2 are still Running there.
    assert core.read_namespaced_pod("contained", ns).status.phase == "Running"
    # The Service (its endpoint on node 3) still answers: forwarding lives on no node.
    assert http_status(f"http://{cluster_ip}/") == 200
    # Node 2's Lease stops: node 1 renews its own past a full renewal period after the kill, node 2 does not.
    frozen = renewed(coordination, SECOND)
    assert frozen <= killed_at
    wait_until(
        lambda: renewed(coordination, FIRST) > killed_at + datetime.timedelta(seconds=node.RENEW_SECONDS + 1),
        timeout=60,
        what="node 1's Lease renewed a period after the kill",
    )
    assert renewed(coordination, SECOND) == frozen

    # The runbook for a dead node's StatefulSet Pod: keep the node out, delete the Pod; it comes back on another
    # node with its data (the volume has no node affinity).
    core.patch_node(SECOND, {"spec": {"unschedulable": True}})
    core.delete_namespaced_pod("data-0", ns, grace_period_seconds=0)
    moved = wait_until(
        lambda: (where := running_on(core, ns, "data-0")) not in (None, SECOND) and where,
        timeout=90,
        what="data-0 Ready on another node",
    )
    assert moved in (FIRST, THIRD)
    logs = wait_until(lambda: kubectl(three_nodes, "logs", "-n", ns, "data-0").stdout, timeout=30, what="logs")
    assert "kept-on-the-disk" in logs
    # Deleted while the node is off: stays, marked for deletion, until the node confirms it.
    core.delete_namespaced_pod("contained", ns)

    nodes.start(directory, SECOND)
    core.patch_node(SECOND, {"spec": {"unschedulable": False}})

    assert nodes.agent_running(directory, SECOND)
    assert renewed(coordination, SECOND) > frozen
    wait_until(lambda: gone(core, ns, "contained"), timeout=60, what="the deleted Pod confirmed gone by node 2")
    wait_until(lambda: running_on(core, ns, "hosted") == SECOND, timeout=90, what="hosted running again on node 2")
    again = cgroup_pids(second.cgroup_parent)
    assert again, "the rebooted node runs its Pods again"
    assert not (again & old), "nothing of before runs on the rebooted node"


def test_drain_evicts_through_the_api_and_honours_a_pod_disruption_budget(
    three_nodes: cluster.ClusterState, core: client.CoreV1Api, api: client.ApiClient, ns: str
) -> None:
    for other in (FIRST, SECOND):  # both replicas start on node 3, and a first replacement has nowhere to go
        assert kubectl(three_nodes, "cordon", other).returncode == 0
    try:
        template = pod("drained", ["sleep", "3600"])
        client.AppsV1Api(api).create_namespaced_deployment(
            ns,
            {
                "metadata": {"name": "drained"},
                "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "drained"}}, "template": template},
            },
        )
        budget = {
            "metadata": {"name": "drained"},
            "spec": {"minAvailable": 1, "selector": {"matchLabels": {"app": "drained"}}},
        }
        policy = client.PolicyV1Api(api)
        policy.create_namespaced_pod_disruption_budget(ns, budget)

        def replicas() -> list[client.V1Pod]:
            return list(core.list_namespaced_pod(ns, label_selector="app=drained").items)

        wait_until(
            lambda: len([p for p in replicas() if running_on(core, ns, p.metadata.name) == THIRD]) == 2,
            timeout=90,
            what="2 replicas Ready on node 3",
        )
        wait_until(
            lambda: policy.read_namespaced_pod_disruption_budget("drained", ns).status.disruptions_allowed == 1,
            timeout=60,
            what="the budget allows one disruption",
        )
        first, second = (p.metadata.name for p in replicas())

        def evict(name: str) -> None:
            body = client.V1Eviction(metadata=client.V1ObjectMeta(name=name, namespace=ns))
            core.create_namespaced_pod_eviction(name, ns, body)

        evict(first)
        with pytest.raises(ApiException) as refused:
            evict(second)  # the first one's replacement cannot run yet: the budget says no
        assert refused.value.status == 429
        assert "disruption budget" in str(refused.value.body)
    finally:
        for other in (FIRST, SECOND):
            kubectl(three_nodes, "uncordon", other)

    drained = kubectl(
        three_nodes, "drain", THIRD, "--pod-selector=app=drained", "--ignore-daemonsets", "--timeout=150s"
    )
    try:
        assert drained.returncode == 0, drained.stderr
        assert core.read_node(THIRD).spec.unschedulable
        wait_until(
            lambda: (
                len([p for p in replicas() if running_on(core, ns, p.metadata.name) in (FIRST, SECOND)]) == 2
                and len(replicas()) == 2
            ),
            timeout=90,
            what="both replicas Ready on nodes 1 and 2",
        )
    finally:
        kubectl(three_nodes, "uncordon", THIRD)
