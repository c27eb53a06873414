"""Start and stop a local Kubernetes cluster made of real control-plane processes on 127.0.0.1.

Components, in start order: etcd, kube-apiserver, then the cloud process (Services, volumes: see
`nodeagent.cloud`), kube-controller-manager, kube-scheduler and one node agent per node, side by side.
Everything a cluster owns (data, certificates, logs, kubeconfig, `state.json`, the nodes' folders) lives in
one folder; `down` stops every process and removes the folder. `nodes` kills and restarts single nodes.
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from jobqueue_devenv import pki as pki_module
from jobqueue_devenv import processes
from jobqueue_devenv.binaries import Binaries
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.nodeagent import cleanup as nodeagent_cleanup
from jobqueue_devenv.nodeagent import cloud as nodeagent_cloud
from jobqueue_devenv.nodeagent import layout
from jobqueue_devenv.nodeagent import network as nodeagent_network
from jobqueue_devenv.processes import ProcessRecord
from jobqueue_devenv.waiting import TimedOut, wait_until

NODE_NAME: Final = layout.FIRST_NODE
NODES_VARIABLE: Final = "JQ_NODES"
APISERVER_PORT_VARIABLE: Final = "JQ_APISERVER_PORT"
CLOUD_PROCESS: Final = "cloud"
START_ATTEMPTS: Final = 3
"""Free ports are picked before the processes bind them; another program may win the race."""

STATE_FILE: Final = "state.json"


@dataclass
class ClusterState:
    """What `up` started, saved in the cluster folder so `down` (in another process) can stop it."""

    directory: str
    kubeconfig: str
    ports: dict[str, int]
    processes: list[ProcessRecord] = field(default_factory=list)
    bin_dirs: list[str] = field(default_factory=list)
    node_name: str = NODE_NAME
    """The first node."""
    node_names: list[str] = field(default_factory=lambda: [NODE_NAME])
    stopped_nodes: list[str] = field(default_factory=list)
    """Nodes `nodes.kill` powered off: their agents are not expected to run (the cluster is still healthy)."""
    ready_seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    """Seconds from the start until each component was ready, for the start-up benchmark."""

    def save(self) -> None:
        path = Path(self.directory) / STATE_FILE
        path.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, directory: Path) -> ClusterState | None:
        path = directory / STATE_FILE
        try:
            raw = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        raw["processes"] = [ProcessRecord(**p) for p in raw.get("processes", [])]
        return cls(**raw)

    @property
    def apiserver_url(self) -> str:
        return f"https://127.0.0.1:{self.ports['kube-apiserver']}"

    def agent(self, node: str) -> ProcessRecord | None:
        """The process record of a node's agent (the latest one started)."""
        name = layout.folder_name(node)
        return next((p for p in reversed(self.processes) if p.name == name), None)

    def expected(self) -> list[ProcessRecord]:
        """The processes that must run: all but the agents of powered-off nodes."""
        agents = {layout.folder_name(n): n for n in self.node_names}
        return [p for p in self.processes if p.name not in agents or agents[p.name] not in self.stopped_nodes]


class _Api:
    """Just enough HTTPS to ask a component whether it is healthy, without a client library."""

    def __init__(self, directory: Path) -> None:
        tls = pki_module.Pki(directory / "pki")
        self.admin = ssl.create_default_context(cafile=str(tls.ca_cert))
        self.admin.load_cert_chain(str(tls.admin_cert), str(tls.admin_key))
        # kube-controller-manager and kube-scheduler serve /healthz on a self-signed certificate.
        self.anonymous = ssl.create_default_context()
        self.anonymous.check_hostname = False
        self.anonymous.verify_mode = ssl.CERT_NONE

    def get(self, url: str, *, admin: bool = True, timeout: float = 2.0) -> tuple[int, str]:
        context = self.admin if admin else self.anonymous
        try:
            with urllib.request.urlopen(url, context=context, timeout=timeout) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def is_healthy(state: ClusterState) -> bool:
    """Every process alive (but the agents of nodes `nodes.kill` powered off) and the apiserver answering
    /readyz with ok."""
    if not state.processes or not all(processes.is_running(p) for p in state.expected()):
        return False
    try:
        status, body = _Api(Path(state.directory)).get(f"{state.apiserver_url}/readyz")
    except (OSError, ssl.SSLError):
        return False
    return status == 200 and body.strip() == "ok"


def node_count(requested: int | None = None) -> int:
    """How many nodes to start: `requested`, else $JQ_NODES, else 1."""
    value: str | int = requested if requested is not None else os.environ.get(NODES_VARIABLE, "1")
    try:
        count = int(value)
        layout.node_names(count)
    except (ValueError, layout.LayoutError):
        raise DevenvError(
            f"{value!r} is not a node count the local cluster can have",
            f"ask for 1 to {layout.MAX_NODES} nodes (--nodes, NODES=, {NODES_VARIABLE}=)",
        ) from None
    return count


def up(
    directory: Path, binaries: Binaries, timeout: float = 90.0, nodes: int | None = None
) -> tuple[ClusterState, bool]:
    """Start a cluster with `nodes` nodes (default: $JQ_NODES, else 1) in `directory`, or return the one
    already running there (whatever its node count).

    Returns the state and whether it was already running.
    """
    count = node_count(nodes)
    existing = ClusterState.load(directory)
    if existing is not None:
        if is_healthy(existing):
            return existing, True
        down(directory)  # leftovers of a cluster that died: stop what remains, start clean
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            return _start(directory, binaries, timeout, count), False
        except _PortRace:
            down(directory)
            if attempt == START_ATTEMPTS:
                raise DevenvError(
                    f"could not start the cluster: ports were taken by other programs {START_ATTEMPTS} times",
                    "retry, or set JQ_APISERVER_PORT to a port you know is free",
                ) from None
    raise AssertionError("unreachable")


def down(directory: Path) -> list[str]:
    """Stop every process of the cluster in `directory` and delete the folder. Returns what was stopped."""
    state = ClusterState.load(directory)
    stopped: list[str] = []
    if state is not None:
        for record in reversed(state.processes):
            if processes.is_running(record):
                stopped.append(record.name)
            processes.stop(record)
    # Pod processes and the Pod network outlive the node agents (as containers outlive a kubelet).
    ended = nodeagent_cleanup.clean_up(directory)
    if ended:
        stopped.append(f"{len(ended)} pod processes")
    if directory.exists() and (state is not None or (directory / "pki").exists()):
        shutil.rmtree(directory, ignore_errors=True)
    return stopped


class _PortRace(Exception):
    """A component could not bind a port we had found free a moment earlier."""


def _pick_ports() -> dict[str, int]:
    ports: dict[str, int] = {}
    explicit = os.environ.get(APISERVER_PORT_VARIABLE)
    if explicit:
        try:
            port = int(explicit)
        except ValueError:
            raise DevenvError(
                f"{APISERVER_PORT_VARIABLE}={explicit!r} is not a port number", "set it to a number like 6443"
            ) from None
        if processes.port_in_use(port):
            raise DevenvError(
                f"port 127.0.0.1:{port} ({APISERVER_PORT_VARIABLE}) is already in use",
                f"stop what listens there (see `ss -ltnp 'sport = :{port}'`) or unset {APISERVER_PORT_VARIABLE}",
            )
        ports["kube-apiserver"] = port
    for name in ("etcd", "etcd-peer", "kube-apiserver", "kube-controller-manager", "kube-scheduler"):
        while name not in ports:
            candidate = processes.free_port()
            if candidate not in ports.values():
                ports[name] = candidate
    return ports


def _write_kubeconfig(path: Path, server: str, tls: pki_module.Pki) -> None:
    import base64

    def b64(file: Path) -> str:
        return base64.b64encode(file.read_bytes()).decode()

    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "jobqueue-local", "cluster": {"server": server, "certificate-authority-data": b64(tls.ca_cert)}}
        ],
        "users": [
            {
                "name": "jobqueue-admin",
                "user": {
                    "client-certificate-data": b64(tls.admin_cert),
                    "client-key-data": b64(tls.admin_key),
                },
            }
        ],
        "contexts": [{"name": "jobqueue-local", "context": {"cluster": "jobqueue-local", "user": "jobqueue-admin"}}],
        "current-context": "jobqueue-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def agent_args(directory: Path, node: str) -> list[str]:
    """The command line of a node's agent (`up`, and `nodes.start` after a power cut)."""
    tls = pki_module.Pki(directory / "pki")
    return [
        sys.executable,
        "-m",
        "jobqueue_devenv.nodeagent",
        f"--kubeconfig={directory / 'kubeconfig'}",
        f"--node-name={node}",
        f"--folder={layout.agent_folder(directory, node)}",
        f"--tls-cert-file={tls.kubelet_cert(node)}",
        f"--tls-private-key-file={tls.kubelet_key(node)}",
        f"--client-ca-file={tls.ca_cert}",
    ]


def spawn_agent(state: ClusterState, node: str) -> ProcessRecord:
    """Start a node's agent and record it in the state (saved)."""
    directory = Path(state.directory)
    name = layout.folder_name(node)
    record, _ = processes.spawn(name, agent_args(directory, node), directory / "logs" / f"{name}.log", python_env())
    state.processes = [p for p in state.processes if p.name != name] + [record]
    state.save()
    return record


def _component_args(
    binaries: Binaries,
    directory: Path,
    ports: dict[str, int],
    tls: pki_module.Pki,
    kubeconfig: Path,
    block: nodeagent_network.Block,
) -> dict[str, list[str]]:
    """Command lines of every component; flags follow envtest and kwokctl's binary runtime."""
    etcd_url = f"http://127.0.0.1:{ports['etcd']}"
    peer_url = f"http://127.0.0.1:{ports['etcd-peer']}"
    client = [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
    ]
    return {
        "etcd": [
            str(binaries.etcd),
            "--name=jobqueue-local",
            f"--data-dir={directory / 'etcd'}",
            f"--listen-client-urls={etcd_url}",
            f"--advertise-client-urls={etcd_url}",
            f"--listen-peer-urls={peer_url}",
            f"--initial-advertise-peer-urls={peer_url}",
            f"--initial-cluster=jobqueue-local={peer_url}",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ],
        "kube-apiserver": [
            str(binaries.kube_apiserver),
            f"--etcd-servers={etcd_url}",
            "--bind-address=127.0.0.1",
            f"--secure-port={ports['kube-apiserver']}",
            "--advertise-address=127.0.0.1",
            # The apiserver cannot publish a loopback address as the `kubernetes` Service's endpoint.
            "--endpoint-reconciler-type=none",
            f"--tls-cert-file={tls.apiserver_cert}",
            f"--tls-private-key-file={tls.apiserver_key}",
            f"--client-ca-file={tls.ca_cert}",
            # `kubectl logs`, `exec`, `port-forward`: the apiserver calls the node agent's kubelet port, both
            # sides verified (exec and port-forward as SPDY: the Node declares no ExtendWebSocketsToKubelet).
            f"--kubelet-client-certificate={tls.kubelet_client_cert}",
            f"--kubelet-client-key={tls.kubelet_client_key}",
            f"--kubelet-certificate-authority={tls.ca_cert}",
            "--kubelet-preferred-address-types=InternalIP",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            f"--service-account-key-file={tls.service_account_pub}",
            f"--service-account-signing-key-file={tls.service_account_key}",
            # ClusterIPs from the cluster's own block: the cloud process puts each on the bridge (`nodeagent.cloud`).
            f"--service-cluster-ip-range={block.service_cidr}",
            "--authorization-mode=Node,RBAC",
            "--allow-privileged=true",
            "--profiling=false",
            f"--cert-dir={directory / 'apiserver-certs'}",
        ],
        "kube-controller-manager": [
            str(binaries.kube_controller_manager),
            *client,
            f"--secure-port={ports['kube-controller-manager']}",
            "--leader-elect=false",
            f"--service-account-private-key-file={tls.service_account_key}",
            f"--root-ca-file={tls.ca_cert}",
            f"--cluster-signing-cert-file={tls.ca_cert}",
            f"--cluster-signing-key-file={tls.ca_key}",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--profiling=false",
        ],
        "kube-scheduler": [
            str(binaries.kube_scheduler),
            *client,
            f"--secure-port={ports['kube-scheduler']}",
            "--leader-elect=false",
            "--kube-api-qps=100",
            "--kube-api-burst=200",
            "--profiling=false",
        ],
        CLOUD_PROCESS: [
            sys.executable,
            "-m",
            "jobqueue_devenv.nodeagent.cloud",
            f"--kubeconfig={kubeconfig}",
            f"--folder={nodeagent_cloud.folder(directory)}",
        ],
    }


def python_env() -> dict[str, str]:
    """The node agents and the cloud process are Python modules of this folder: make them importable."""
    env = dict(os.environ)
    here = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [here, env.get("PYTHONPATH")]))
    return env


def _start(directory: Path, binaries: Binaries, timeout: float, count: int) -> ClusterState:
    started_at = time.monotonic()
    ports = _pick_ports()  # first: a taken port must fail before anything is written
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "logs").mkdir(exist_ok=True)
    names = layout.node_names(count)
    # In-cluster clients reach the apiserver at the `kubernetes` Service's address on the Pod network.
    tls = pki_module.generate(
        directory / "pki", names, extra_ips=tuple(nodeagent_network.kubernetes_service_addresses())
    )
    kubeconfig = directory / "kubeconfig"
    _write_kubeconfig(kubeconfig, f"https://127.0.0.1:{ports['kube-apiserver']}", tls)
    state = ClusterState(
        directory=str(directory),
        kubeconfig=str(kubeconfig),
        ports=ports,
        bin_dirs=[str(d) for d in binaries.bin_dirs],
        node_names=names,
    )
    state.save()
    try:  # the block first: the apiserver's Service CIDR is part of it
        block = nodeagent_network.claim_block(directory)
    except nodeagent_network.NetworkError as exc:
        down(directory)
        raise DevenvError(str(exc), "stop local clusters you no longer need (`make cluster-down`)") from None
    for place in layout.layouts(block.index, count):
        place.save(layout.agent_folder(directory, place.name))
    args = _component_args(binaries, directory, ports, tls, kubeconfig, block)
    api = _Api(directory)
    deadline = started_at + timeout

    def launch(name: str) -> None:
        env = python_env() if name == CLOUD_PROCESS else None
        record, _ = processes.spawn(name, args[name], directory / "logs" / f"{name}.log", env)
        state.processes.append(record)
        state.save()  # saved after every spawn, so `down` finds everything even if we crash here

    def wait_for(name: str, check: Any, what: str) -> None:
        record = next(p for p in state.processes if p.name == name)
        log = directory / "logs" / f"{name}.log"

        def probe() -> bool:
            if not processes.is_running(record):
                raise _Exited()
            return bool(check())

        try:
            wait_until(probe, timeout=max(deadline - time.monotonic(), 1.0), what=what, interval=0.05)
            state.timings[what] = round(time.monotonic() - started_at, 2)
        except _Exited:
            tail = processes.log_tail(log)
            if "address already in use" in tail:
                raise _PortRace() from None
            down(directory)
            raise DevenvError(f"{name} exited while starting: {tail}", f"see {log}") from None
        except TimedOut:
            tail = processes.log_tail(log)
            down(directory)
            raise DevenvError(
                f"{name} did not become ready within {timeout:g}s ({what}): {tail}",
                f"see {log}; a slow machine may need JQ_CLUSTER_TIMEOUT={int(timeout * 2)}",
            ) from None

    def get_ok(url: str, admin: bool = True) -> bool:
        status, body = api.get(url, admin=admin)
        return status == 200 and body.strip() == "ok"

    launch("etcd")
    wait_for(
        "etcd", lambda: '"health":"true"' in api.get(f"http://127.0.0.1:{ports['etcd']}/health")[1], "etcd /health"
    )
    launch("kube-apiserver")
    wait_for("kube-apiserver", lambda: get_ok(f"{state.apiserver_url}/readyz"), "kube-apiserver /readyz")
    for name in (CLOUD_PROCESS, "kube-controller-manager", "kube-scheduler"):
        launch(name)
    for node in names:  # side by side: each agent needs only the apiserver
        spawn_agent(state, node)
    ready_mark = nodeagent_cloud.folder(directory) / nodeagent_cloud.READY_FILE
    wait_for(CLOUD_PROCESS, ready_mark.exists, "cloud following Services and volumes")
    wait_for(
        "kube-controller-manager",
        lambda: get_ok(f"https://127.0.0.1:{ports['kube-controller-manager']}/healthz", admin=False),
        "kube-controller-manager /healthz",
    )
    wait_for(
        "kube-scheduler",
        lambda: get_ok(f"https://127.0.0.1:{ports['kube-scheduler']}/healthz", admin=False),
        "kube-scheduler /healthz",
    )
    for node in names:
        wait_for(layout.folder_name(node), lambda n=node: node_ready(api, state, n), f"node {node} Ready")
    state.ready_seconds = round(time.monotonic() - started_at, 2)
    state.save()
    return state


class _Exited(Exception):
    """The component's process ended while we waited for it."""


def node_ready(api: _Api, state: ClusterState, node: str) -> bool:
    """The Node's Ready condition is True."""
    status, body = api.get(f"{state.apiserver_url}/api/v1/nodes/{node}")
    if status != 200:
        return False
    conditions = json.loads(body).get("status", {}).get("conditions", [])
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
