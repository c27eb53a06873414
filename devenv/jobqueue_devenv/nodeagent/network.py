"""The Pod network of one local cluster: a Linux bridge on the host and a network namespace per Pod.

Each cluster claims one block 10.213.N.0/24 (N from 0 to 63) by creating the bridge `jqbrN`
(creation is atomic, so two clusters on one machine never share a block); `up` claims it before the
apiserver starts. The host side owns 10.213.N.1 on the bridge; Pods get addresses of their node's part of
.2 to .127 (`layout`) on their own `eth0` (one end of a veth pair whose other end is a port of the
bridge); 10.213.N.128/25 is the apiserver's Service CIDR, and each ClusterIP is added to the bridge as /32
by the cluster's `cloud` process, whose forwarder listens on it, so the host and every Pod of every node
reach it. All traffic stays on this machine: between the host and network namespaces this code created.

MAC addresses are fixed by address (`Block.mac`): a Linux bridge otherwise takes the lowest MAC of its
ports, so adding or removing a Pod changed the gateway's and every Service address's MAC under the
other Pods' ARP caches, and their connections timed out for up to a minute; and a Pod IP handed out
again gets the MAC it had before, so nobody's cached entry for it goes stale either.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jobqueue_devenv.nodeagent import names

BLOCKS = 64
SERVICE_NETWORK = 128
"""10.213.N.128/25 is the cluster's Service CIDR (`--service-cluster-ip-range`)."""
KUBERNETES_SERVICE = SERVICE_NETWORK + 1
"""The apiserver gives the `kubernetes` Service the first address of the Service CIDR: .129 of the block.
The apiserver's certificate names it for every block."""
NETNS_ETC = Path("/etc/netns")
NETNS_RUN = Path("/run/netns")
RECORD_FILE = "network.json"


CLONE_NEWNET = 0x40000000


def connect_inside(netns: str, port: int, timeout: float) -> socket.socket:
    """A TCP connection to 127.0.0.1:`port` inside a Pod's network namespace, as the container runtime
    dials for `kubectl port-forward`: the Pod sees a local client (a server bound to localhost is reached,
    Redis's protected mode lets it in). A socket stays in the namespace it was made in, so a short-lived
    thread enters the namespace (setns changes only the calling thread's), dials, and ends."""
    made: list[socket.socket | OSError] = []

    def dial() -> None:
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            with (NETNS_RUN / netns).open() as handle:
                if libc.setns(handle.fileno(), CLONE_NEWNET) != 0:
                    number = ctypes.get_errno()
                    raise OSError(number, os.strerror(number))
            made.append(socket.create_connection(("127.0.0.1", port), timeout=timeout))
        except OSError as exc:
            made.append(exc)

    thread = threading.Thread(target=dial, name=f"dial-{netns}")
    thread.start()
    thread.join()
    if isinstance(made[0], OSError):
        raise made[0]
    return made[0]


def ip_binary() -> str:
    found = shutil.which("ip") or shutil.which("ip", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if found is None:
        raise RuntimeError("the `ip` command (Debian package iproute2) is missing")
    return found


class NetworkError(Exception):
    """An `ip` command failed."""


def _ip(*args: str, batch: str | None = None) -> None:
    command = [ip_binary(), *args] + (["-batch", "-"] if batch is not None else [])
    done = subprocess.run(command, input=batch, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise NetworkError(f"{' '.join(command)}: {done.stderr.strip()}\n{batch or ''}")


def bridge_owner(bridge: str) -> str | None:
    """The cluster folder a bridge belongs to (kept as the bridge's alias), or None if there is no such bridge."""
    try:
        return Path(f"/sys/class/net/{bridge}/ifalias").read_text().strip()
    except OSError:
        return None


@dataclass(frozen=True)
class Block:
    """The address block and interface names of one cluster; saved in the cluster folder for `down`."""

    index: int

    @property
    def bridge(self) -> str:
        return f"jqbr{self.index}"

    @property
    def gateway(self) -> str:
        return self.address(1)

    def address(self, host: int) -> str:
        return f"10.213.{self.index}.{host}"

    def netns(self, host: int) -> str:
        return f"jq{self.index}p{host}"

    def host_veth(self, host: int) -> str:
        return f"jq{self.index}v{host}"

    @property
    def service_cidr(self) -> str:
        return f"{self.address(SERVICE_NETWORK)}/25"

    def mac(self, host: int) -> str:
        """The MAC of address `host` (1: the bridge): locally administered, one per address of every block."""
        return f"02:6a:71:00:{self.index:02x}:{host:02x}"

    def owns_netns(self, name: str) -> bool:
        prefix = f"jq{self.index}p"
        return name.startswith(prefix) and name[len(prefix) :].isdigit()

    def save(self, directory: Path) -> None:
        (directory / RECORD_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, directory: Path) -> Block | None:
        try:
            return cls(**json.loads((directory / RECORD_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def set_owner(block: Block, directory: Path) -> None:
    """Record another cluster folder as the bridge's owner (its alias)."""
    _ip("link", "set", block.bridge, "alias", str(directory.resolve()))


def kubernetes_service_addresses() -> list[str]:
    """Every address the `kubernetes` Service can have, one per block: SANs of the apiserver's certificate."""
    return [Block(index).address(KUBERNETES_SERVICE) for index in range(BLOCKS)]


def claim_block(directory: Path) -> Block:
    """Create the bridge of the first free block for the cluster folder `directory` (recorded as the bridge's
    alias and in `directory`); a bridge whose cluster folder is gone is reused."""
    owner = str(directory.resolve())
    for index in range(BLOCKS):
        block = Block(index)
        current = bridge_owner(block.bridge)
        if current is not None and current != owner and Path(current).exists():
            continue
        if current is not None:
            remove_block(block)
        try:
            _ip("link", "add", block.bridge, "address", block.mac(1), "type", "bridge")
        except NetworkError:
            continue  # taken a moment ago by another cluster
        _ip(
            batch=f"link set {block.bridge} alias {owner}\n"
            f"addr add {block.gateway}/24 dev {block.bridge}\n"
            f"link set {block.bridge} up\n"
        )
        block.save(directory)
        return block
    raise NetworkError(f"all {BLOCKS} address blocks 10.213.N.0/24 are taken by other local clusters")


def existing_netns() -> list[str]:
    try:
        return sorted(os.listdir(NETNS_RUN))
    except OSError:
        return []


def remove_block(block: Block) -> None:
    """Delete every Pod namespace of the block and its bridge (which takes the Service addresses along)."""
    for name in existing_netns():
        if block.owns_netns(name):
            remove_sandbox(name)
    subprocess.run([ip_binary(), "link", "del", block.bridge], capture_output=True, check=False)


def remove_sandbox(netns: str, host_veth: str | None = None) -> None:
    """Delete a Pod's namespace; and its host-side veth, which a process still in the namespace would keep."""
    subprocess.run([ip_binary(), "netns", "del", netns], capture_output=True, check=False)
    if host_veth is not None:
        subprocess.run([ip_binary(), "link", "del", host_veth], capture_output=True, check=False)
    shutil.rmtree(NETNS_ETC / netns, ignore_errors=True)


def add_service_address(block: Block, address: str) -> None:
    """Put a ClusterIP on the bridge (as /32), so a forwarder can listen on it."""
    _ip("addr", "replace", f"{address}/32", "dev", block.bridge)


def remove_service_address(block: Block, address: str) -> None:
    subprocess.run([ip_binary(), "addr", "del", f"{address}/32", "dev", block.bridge], capture_output=True, check=False)


def unplug(block: Block, hosts: range) -> None:
    """Delete the host side of every Pod veth of `hosts` (a power cut takes a node's cables with it): a Pod
    namespace left behind keeps its addresses, but nothing reaches them any more; packets to them are lost,
    as to a machine that is off, rather than refused."""
    present = set(os.listdir("/sys/class/net"))
    batch = "".join(f"link del {block.host_veth(h)}\n" for h in hosts if block.host_veth(h) in present)
    if batch:
        subprocess.run([ip_binary(), "-force", "-batch", "-"], input=batch, capture_output=True, text=True, check=False)


def remove_sandboxes(block: Block, owns: Callable[[str], bool]) -> None:
    """Delete every Pod namespace of `block` that `owns` (a node's, or all of them) with its veth."""
    for name in existing_netns():
        if owns(name):
            remove_sandbox(name, block.host_veth(int(name.rsplit("p", 1)[1])))


class PodNetwork:
    """Hands out the Pod addresses of one node (`hosts` of the block) and builds each Pod's network namespace."""

    def __init__(self, block: Block, hosts: range) -> None:
        self.block = block
        self.hosts = hosts
        self._lock = threading.Lock()
        self._pods: set[int] = set()

    def _take(self) -> int:
        with self._lock:
            for host in self.hosts:
                if host not in self._pods:
                    self._pods.add(host)
                    return host
        raise NetworkError(
            f"no free Pod address left on this node ({self.block.address(self.hosts[0])} to "
            f"{self.block.address(self.hosts[-1])})"
        )

    def create_sandbox(self, hosts_text: str) -> tuple[int, str, str]:
        """A network namespace with its own loopback and `eth0`; returns (host number, namespace, Pod IP)."""
        host = self._take()
        netns, ip = self.block.netns(host), self.block.address(host)
        remove_sandbox(netns, self.block.host_veth(host))  # a leftover of an agent that died
        etc = NETNS_ETC / netns
        etc.mkdir(parents=True, exist_ok=True)
        names.rewrite_in_place(str(etc / "hosts"), hosts_text)
        (etc / "resolv.conf").write_text(names.RESOLV_CONF)
        veth = self.block.host_veth(host)
        try:
            _ip(
                batch=f"netns add {netns}\n"
                f"link add {veth} type veth peer name eth0 netns {netns}\n"
                f"link set {veth} master {self.block.bridge} up\n"
            )
            _ip(
                "-n",
                netns,
                batch=f"link set lo up\nlink set eth0 address {self.block.mac(host)}\n"
                f"addr add {ip}/24 dev eth0\nlink set eth0 up\n"
                f"route add default via {self.block.gateway}\n",
            )
        except NetworkError:
            self.delete_sandbox(host)
            raise
        return host, netns, ip

    def delete_sandbox(self, host: int) -> None:
        remove_sandbox(self.block.netns(host), self.block.host_veth(host))
        with self._lock:
            self._pods.discard(host)
