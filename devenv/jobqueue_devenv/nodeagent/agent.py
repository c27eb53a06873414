"""The local node agent: registers one Node and runs the Pods bound to it as local processes.

Run it as `python -m jobqueue_devenv.nodeagent --kubeconfig PATH --node-name NAME`; the cluster
starts it for you. See docs/local-cluster.md for what it does and does not do.
"""

from __future__ import annotations

import argparse
import base64
import logging
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from jobqueue_devenv.nodeagent import cleanup, kubeletapi, layout, logs, network, node, runc, streaming
from jobqueue_devenv.nodeagent.backoff import BackOff
from jobqueue_devenv.nodeagent.containers import MARKER
from jobqueue_devenv.nodeagent.imagestore import ImageStore
from jobqueue_devenv.nodeagent.informer import Informer
from jobqueue_devenv.nodeagent.pods import PodWorker, Runtime
from jobqueue_devenv.nodeagent.services import HostsFiles, ServiceNames

log = logging.getLogger("node-agent")

HOST_IP = "127.0.0.1"
LOOP_SECONDS = 0.5
RESYNC_SECONDS = 5.0

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class ServingTls:
    """The kubelet port's certificate and the CA its clients (the apiserver) must present a certificate of."""

    cert: Path
    key: Path
    client_ca: Path


class Agent:
    def __init__(
        self,
        api_client: client.ApiClient,
        place: layout.NodeLayout,
        folder: Path,
        tls: ServingTls | None = None,
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.discovery = client.DiscoveryV1Api(api_client)
        self.kubelet_api = (
            kubeletapi.KubeletServer(
                self.container_logs,
                tls.cert,
                tls.key,
                tls.client_ca,
                find_exec=self.exec_target,
                find_pod=self.pod_address,
            )
            if tls
            else None
        )
        self.node = node.NodeRegistration(api_client, place, self.kubelet_api.port if self.kubelet_api else 0)
        self.name = place.name
        self.folder = folder
        self.stopping = threading.Event()
        self.workers: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        block = network.Block(place.block)
        log.info("pod addresses %s on bridge %s", place.pod_cidr, block.bridge)
        self.network = network.PodNetwork(block, place.hosts)
        self.hosts = HostsFiles()
        self.services = ServiceNames(self.hosts)
        self.runtime = Runtime(
            core=self.core,
            network=self.network,
            hosts=self.hosts,
            directory=folder,
            host_ip=HOST_IP,
            backoff=BackOff(),
            base_env=self.base_env,
            service_env=self.service_env,
            secrets=self.secret_data,
            config_maps=self.config_map_data,
            volume_sources=ApiSources(self.core),
            images=ImageStore(),
            runc_root=runc.state_root(folder),
            cgroup_parent=place.cgroup_parent,
        )

    def service_env(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """What the kubelet adds to every container's env: HOSTNAME and the `kubernetes` Service."""
        env = {"HOSTNAME": pod["metadata"]["name"]}
        kubernetes = self.services.address_of("default", "kubernetes")
        if kubernetes:
            env.update(KUBERNETES_SERVICE_HOST=kubernetes, KUBERNETES_SERVICE_PORT="443")
        return env

    def base_env(self, pod: Mapping[str, Any]) -> dict[str, str]:
        """What a host process gets before its own env: PATH with this Python first (its tools on PATH)."""
        return {
            "PATH": os.pathsep.join([str(Path(sys.executable).parent), DEFAULT_PATH]),
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            MARKER: str(self.folder.resolve()),
            **self.service_env(pod),
        }

    def _worker(self, namespace: str, name: str) -> PodWorker | None:
        with self.lock:
            return next(
                (
                    w
                    for w in self.workers.values()
                    if (w.pod["metadata"]["namespace"], w.pod["metadata"]["name"]) == (namespace, name)
                ),
                None,
            )

    def exec_target(self, namespace: str, name: str, container: str) -> streaming.ExecTarget:
        """`kubectl exec`: a running container of a Pod of this node."""
        worker = self._worker(namespace, name)
        if worker is None:
            raise streaming.RequestError(404, "pod does not exist")
        return worker.exec_target(container)

    def pod_address(self, namespace: str, name: str) -> tuple[str, Callable[[int], socket.socket]]:
        """`kubectl port-forward`: the uid of a Pod of this node, and how to dial a port inside it."""
        worker = self._worker(namespace, name)
        if worker is None or worker.sandbox is None:
            raise streaming.RequestError(404, "pod does not exist")
        netns = worker.netns
        return worker.uid, lambda port: network.connect_inside(netns, port, streaming.STREAM_CREATION_TIMEOUT)

    def container_logs(self, namespace: str, name: str, container: str) -> kubeletapi.LogTarget:
        """A container's log files for the kubelet API: of the Pod running here, else of one that ran here."""
        worker = self._worker(namespace, name)
        if worker is not None:
            names = [c.name for c in worker.containers]
            if container not in names:
                return kubeletapi.LogTarget(
                    [], lambda _: False, f"container {container} is not valid for pod {name}", 400
                )
            folder = worker.folder
            return kubeletapi.LogTarget(logs.runs(folder, container), lambda path: worker.writes(container, path))
        folders = sorted((self.folder / "pods").glob(f"{namespace}_{name}_*"), key=lambda p: p.stat().st_mtime)
        if not folders:
            return kubeletapi.LogTarget([], lambda _: False, f'pods "{name}" not found on node {self.name}', 404)
        return kubeletapi.LogTarget(logs.runs(folders[-1], container), lambda _: False)

    def secret_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            secret = self.core.read_namespaced_secret(name, namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        data = {k: base64.b64decode(v).decode() for k, v in (secret.data or {}).items()}
        data.update(secret.string_data or {})
        return data

    def config_map_data(self, namespace: str, name: str) -> dict[str, str] | None:
        try:
            return dict(self.core.read_namespaced_config_map(name, namespace).data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def on_pod(self, kind: str, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            worker = self.workers.get(uid)
            if kind == "DELETED":
                if worker is not None:
                    worker.gone()
                return
            if worker is None:
                worker = self.workers[uid] = PodWorker(pod, self.runtime, self.worker_ended)
                worker.start()
            else:
                worker.update(pod)

    def worker_ended(self, uid: str) -> None:
        with self.lock:
            self.workers.pop(uid, None)

    def resync(self) -> None:
        """Give every bound Pod a worker: one whose worker ended early (an API error) gets another."""
        for pod in list(self.pods.cache.values()):
            if pod["metadata"]["uid"] not in self.workers:
                self.on_pod("MODIFIED", pod)

    def run(self) -> None:
        if self.kubelet_api is not None:
            self.kubelet_api.start()
            log.info("kubelet API (logs, exec, port-forward) on 127.0.0.1:%d", self.kubelet_api.port)
        self.node.register()
        services = Informer(
            "services", self.core.list_service_for_all_namespaces, self.services.on_service, self.stopping
        )
        slices = Informer(
            "endpointslices",
            self.discovery.list_endpoint_slice_for_all_namespaces,
            self.services.on_slice,
            self.stopping,
        )  # the Pods of headless Services, by name in the hosts files
        services.start()
        slices.start()
        services.synced.wait(RESYNC_SECONDS)  # Pods' hosts files and KUBERNETES_SERVICE_HOST name the Services
        self.pods = Informer(
            "pods",
            self.core.list_pod_for_all_namespaces,
            self.on_pod,
            self.stopping,
            field_selector=f"spec.nodeName={self.name}",
        )
        self.pods.start()
        duties = [
            *self.node.duties(),
            node.Duty(self.resync, RESYNC_SECONDS),
        ]
        while not self.stopping.is_set():
            for duty in duties:
                duty.run_if_due()
            self.stopping.wait(LOOP_SECONDS)


class ApiSources:
    """What Pod volumes are made of, read from the API server (`volumes.Sources`)."""

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.serialize = core.api_client.sanitize_for_serialization

    @staticmethod
    def _absent(call: Any, *args: Any) -> Any:
        try:
            return call(*args)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def secret(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = self._absent(self.core.read_namespaced_secret, name, namespace)
        if found is None:
            return None
        return {key: base64.b64decode(value) for key, value in (found.data or {}).items()}

    def config_map(self, namespace: str, name: str) -> dict[str, bytes] | None:
        found = self._absent(self.core.read_namespaced_config_map, name, namespace)
        if found is None:
            return None
        data = {key: value.encode() for key, value in (found.data or {}).items()}
        data.update({key: base64.b64decode(value) for key, value in (found.binary_data or {}).items()})
        return data

    def claim(self, namespace: str, name: str) -> dict[str, Any] | None:
        found = self._absent(self.core.read_namespaced_persistent_volume_claim, name, namespace)
        return None if found is None else dict(self.serialize(found))

    def persistent_volume(self, name: str) -> dict[str, Any] | None:
        found = self._absent(self.core.read_persistent_volume, name)
        return None if found is None else dict(self.serialize(found))

    def token(self, namespace: str, service_account: str, audience: str, seconds: int, pod: str, uid: str) -> str:
        """A TokenRequest for the Pod's ServiceAccount, bound to the Pod (invalid once the Pod is gone)."""
        body = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": {
                "audiences": [audience] if audience else [],  # empty: the apiserver's own audiences
                "expirationSeconds": seconds,
                "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": pod, "uid": uid},
            },
        }
        response = self.core.create_namespaced_service_account_token(service_account, namespace, body)
        return str(response.status.token)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--node-name", required=True)
    parser.add_argument(
        "--folder",
        type=Path,
        help="the node's folder, with its layout record (default: node-agent[-N]/ next to kubeconfig)",
    )
    parser.add_argument(
        "--tls-cert-file", type=Path, help="serving certificate of the kubelet port (logs, exec, port-forward)"
    )
    parser.add_argument("--tls-private-key-file", type=Path)
    parser.add_argument("--client-ca-file", type=Path, help="CA of the certificates clients must present")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    folder: Path = args.folder or layout.agent_folder(args.kubeconfig.resolve().parent, args.node_name)
    place = layout.NodeLayout.load(folder)
    if place is None or place.name != args.node_name:
        raise SystemExit(f"no layout record of node {args.node_name} in {folder}: `up` writes it")
    # First of all: everything this agent and its Pods will run is in the node's cgroup (`nodes.kill`).
    runc.join_node_cgroup(place.cgroup_parent)
    leftovers = cleanup.end_pod_processes(folder)  # of an earlier agent of this cluster that died
    if leftovers:
        log.warning("ended %d processes an earlier agent left running", len(leftovers))
    tls = (
        ServingTls(args.tls_cert_file, args.tls_private_key_file, args.client_ca_file)
        if args.tls_cert_file and args.tls_private_key_file and args.client_ca_file
        else None
    )
    agent = Agent(config.new_client_from_config(config_file=str(args.kubeconfig)), place, folder, tls)
    signal.signal(signal.SIGTERM, lambda *_: agent.stopping.set())
    signal.signal(signal.SIGINT, lambda *_: agent.stopping.set())
    agent.run()
    log.info("stopped; Pod processes keep running until `down` (as with a kubelet)")
