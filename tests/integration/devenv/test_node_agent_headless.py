"""A headless Service names its StatefulSet's Pods (`<pod>.<service>.<ns>.svc`), as cluster DNS does: for the
other Pods (the node agents' hosts files) and for host commands (the cloud's), and a Pod that comes back with
a new address is found at it (the highly available broker's members and Sentinels rely on it)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from tests.integration.devenv.test_node_agent import (
    DEVENV,
    finished_pod,
    one_shot_pod,
    pod_logs,
    program,
    ready_pods,
    web_spec,
)


def _statefulset(name: str, namespace: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "serviceName": name,
            "podManagementPolicy": "Parallel",
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": web_spec(namespace)},
        },
    }


def _headless(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "clusterIP": "None",
            "selector": {"app": name},
            "ports": [{"name": "main", "port": 8080, "targetPort": 8080}],
        },
    }


def _fetched_by(core: client.CoreV1Api, state: cluster.ClusterState, namespace: str, name: str, url: str) -> str:
    core.create_namespaced_pod(namespace, one_shot_pod(name, program("fetch", url), namespace))
    done = wait_until(lambda: finished_pod(core, namespace, name), timeout=60, what=f"{name} finished")
    logs = pod_logs(state, namespace, name)
    assert done.status.phase == "Succeeded", logs
    return logs.split("fetched ")[1].split()[0]


def _host_lookup(state: cluster.ClusterState, name: str) -> str | None:
    """The address a host command resolves `name` to (`python -m jobqueue_devenv exec`), or None."""
    done = subprocess.run(
        [sys.executable, "-m", "jobqueue_devenv", "--dir", state.directory, "exec", "--", "getent", "hosts", name],
        env=dict(os.environ, PYTHONPATH=str(DEVENV)),
        capture_output=True,
        text=True,
        check=False,
    )
    return done.stdout.split()[0] if done.returncode == 0 and done.stdout else None


def test_a_headless_service_names_each_pod(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    apps.create_namespaced_stateful_set(namespace, _statefulset("web", namespace))
    core.create_namespaced_service(namespace, _headless("web"))
    pods = wait_until(lambda: ready_pods(core, namespace, "app=web", 2), timeout=60, what="2 ready web pods")
    addresses = {p.metadata.name: p.status.pod_ip for p in pods}

    assert _fetched_by(core, local_cluster, namespace, "short", "http://web-0.web:8080/") == "web-0"
    full = f"http://web-1.web.{namespace}.svc.cluster.local:8080/"
    assert _fetched_by(core, local_cluster, namespace, "full", full) == "web-1"
    wait_until(
        lambda: _host_lookup(local_cluster, f"web-0.web.{namespace}.svc") == addresses["web-0"],
        timeout=30,
        what="the host command resolves web-0",
    )

    old_uid = next(p.metadata.uid for p in pods if p.metadata.name == "web-0")
    core.delete_namespaced_pod("web-0", namespace, grace_period_seconds=0)

    def replaced() -> bool:
        back = ready_pods(core, namespace, "app=web", 2) or []
        return any(p.metadata.name == "web-0" and p.metadata.uid != old_uid for p in back)

    wait_until(replaced, timeout=60, what="web-0 back")
    new = core.read_namespaced_pod("web-0", namespace).status.pod_ip
    assert _fetched_by(core, local_cluster, namespace, "again", f"http://web-0.web.{namespace}.svc:8080/") == "web-0"
    wait_until(
        lambda: _host_lookup(local_cluster, f"web-0.web.{namespace}.svc") == new,
        timeout=30,
        what="the host command resolves web-0's new address",
    )
