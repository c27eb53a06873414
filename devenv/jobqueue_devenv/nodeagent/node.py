"""The Node object and its lease: what the control plane needs before it schedules anything here.

A Node with capacity and a Ready condition, and a Lease in `kube-node-lease` renewed every few
seconds so the node lifecycle controller does not mark the node unreachable.
"""

from __future__ import annotations

import datetime
import logging
import os
import platform
import time
import uuid
from collections.abc import Callable
from typing import Any, Final

from kubernetes import client
from kubernetes.client.rest import ApiException

from jobqueue_devenv import versions
from jobqueue_devenv.nodeagent.layout import NodeLayout

LEASE_SECONDS: Final = 40
RENEW_SECONDS: Final = 10
STATUS_SECONDS: Final = 60

log = logging.getLogger("node-agent.node")


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def node_manifest(name: str, pod_cidr: str) -> dict[str, Any]:
    """The Node object this agent registers (labels as a kubelet sets them, its Pod address range)."""
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64" if platform.machine() == "x86_64" else platform.machine(),
                "node.kubernetes.io/instance-type": "jobqueue-local",
            },
            "annotations": {"jobqueue.dev/node-agent": "process"},
        },
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr]},
    }


def node_status(
    name: str, now: datetime.datetime, kubelet_port: int = 0, max_pods: int = 110, boot_id: str = ""
) -> dict[str, Any]:
    """Capacity of this machine (Pods: as many as the node has addresses, at most 110), the Ready condition,
    the node's address, its kubelet port (logs) and the id of this start of its agent (a reboot changes it)."""
    capacity = {
        "cpu": str(os.cpu_count() or 1),
        "memory": f"{_memory_bytes() // 1024}Ki",
        "pods": str(max_pods),
        "ephemeral-storage": "100Gi",
    }
    stamp = now.strftime("%Y-%m-%dT%H:%M:%SZ")

    def condition(kind: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {
            "type": kind,
            "status": status,
            "reason": reason,
            "message": message,
            "lastHeartbeatTime": stamp,
            "lastTransitionTime": stamp,
        }

    return {
        "capacity": capacity,
        "allocatable": capacity,
        "conditions": [
            condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "node agent has sufficient memory"),
            condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "node agent has no disk pressure"),
            condition("PIDPressure", "False", "KubeletHasSufficientPID", "node agent has sufficient PID"),
            condition("Ready", "True", "KubeletReady", "jobqueue node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": "127.0.0.1"}, {"type": "Hostname", "address": name}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": kubelet_port}},
        "nodeInfo": {
            "machineID": "",
            "systemUUID": "",
            "bootID": boot_id,
            "kernelVersion": platform.release(),
            "osImage": "jobqueue local node agent",
            "containerRuntimeVersion": "runc://1 (images), process://0.1 (host commands)",
            "kubeletVersion": versions.K8S_VERSION,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


class NodeRegistration:
    """Registers the node, then renews its lease and status."""

    def __init__(self, api_client: client.ApiClient, layout: NodeLayout, kubelet_port: int = 0) -> None:
        self.kubelet_port = kubelet_port
        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.layout = layout
        self.name = layout.name
        self.boot_id = str(uuid.uuid4())

    def register(self) -> None:
        try:
            self.core.create_node(node_manifest(self.name, self.layout.pod_cidr))
            log.info("registered node %s", self.name)
        except ApiException as exc:
            if exc.status != 409:
                raise
            self.core.patch_node(self.name, node_manifest(self.name, self.layout.pod_cidr))
        self.post_status()

    def post_status(self) -> None:
        status = node_status(self.name, _now(), self.kubelet_port, self.layout.max_pods, self.boot_id)
        self.core.patch_node_status(self.name, {"status": status})

    def renew_lease(self) -> None:
        node = self.core.read_node(self.name)
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {
                "name": self.name,
                "namespace": "kube-node-lease",
                "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.name, "uid": node.metadata.uid}],
            },
            "spec": {
                "holderIdentity": self.name,
                "leaseDurationSeconds": LEASE_SECONDS,
                "renewTime": _now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            },
        }
        try:
            self.coordination.patch_namespaced_lease(self.name, "kube-node-lease", {"spec": body["spec"]})
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def duties(self) -> list[Duty]:
        return [Duty(self.renew_lease, RENEW_SECONDS), Duty(self.post_status, STATUS_SECONDS)]


class Duty:
    """A periodic job of the agent; one failing (say, a passing API error) never stops the others."""

    def __init__(self, job: Callable[[], None], every: float) -> None:
        self.job, self.every, self.last = job, every, float("-inf")

    def run_if_due(self) -> None:
        now = time.monotonic()
        if now - self.last < self.every:
            return
        try:
            self.job()
            self.last = now
        except Exception:
            log.exception("%s failed; retrying", self.job.__name__)
