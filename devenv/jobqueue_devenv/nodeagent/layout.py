"""Where each node of a local cluster lives: its name, folder, Pod addresses and cgroup (pure, plus a record file).

A cluster has one address block 10.213.N.0/24 (`network.Block`). Its upper half, 10.213.N.128/25, is the
apiserver's Service CIDR (ClusterIPs are real addresses on the bridge, see `cloud`); its lower half holds the
Pods and is split into equal, aligned parts, one per node, which are the Nodes' `spec.podCIDR`:

| nodes | podCIDR of each | Pod addresses per node |
| --- | --- | --- |
| 1 | /25 | 126 (.2 to .127, as a one-node cluster always had) |
| 2 | /26 | 62 to 64 |
| 3, 4 | /27 | 30 to 32 |

Addresses .0 and .1 (the bridge) are never a Pod's; every other address of a part is (Pods use a /24 netmask,
so a part's first and last address are ordinary addresses on the bridge).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Final

FIRST_NODE: Final = "jobqueue-local"
"""The first node's name, as a one-node cluster always had it."""
MAX_NODES: Final = 4
POD_HALF: Final = 128
"""Addresses .0 to .127 of the block are for Pods; .128 to .255 are the Service CIDR."""
AGENT_FOLDER: Final = "node-agent"
RECORD_FILE: Final = "node.json"
MAX_PODS: Final = 110
"""The kubelet's default; a node with fewer Pod addresses announces that many."""


class LayoutError(ValueError):
    """A node count or node name the local cluster cannot have."""


def node_names(count: int) -> list[str]:
    """`jobqueue-local`, `jobqueue-local-2`, `jobqueue-local-3`, ..."""
    if not 1 <= count <= MAX_NODES:
        raise LayoutError(f"a local cluster has 1 to {MAX_NODES} nodes, not {count}")
    return [FIRST_NODE, *(f"{FIRST_NODE}-{number}" for number in range(2, count + 1))]


def node_index(name: str) -> int:
    """0 for `jobqueue-local`, 1 for `jobqueue-local-2`, ...; LayoutError for any other name."""
    if name == FIRST_NODE:
        return 0
    prefix = f"{FIRST_NODE}-"
    number = name[len(prefix) :] if name.startswith(prefix) else ""
    if not number.isdigit() or not 2 <= int(number) <= MAX_NODES or number != str(int(number)):
        raise LayoutError(f"no node {name!r}: local nodes are named {', '.join(node_names(MAX_NODES))}")
    return int(number) - 1


def folder_name(node: str) -> str:
    """The node's folder in the cluster folder, and the name of its agent's process: node-agent, node-agent-2..."""
    index = node_index(node)
    return AGENT_FOLDER if index == 0 else f"{AGENT_FOLDER}-{index + 1}"


def agent_folder(cluster_directory: Path, node: str = FIRST_NODE) -> Path:
    return cluster_directory / folder_name(node)


def pod_folder(cluster_directory: Path, node: str, namespace: str, name: str, uid: str) -> Path:
    """Where the agent of `node` keeps a Pod's logs and volumes (kept after the Pod, until the node reboots)."""
    return agent_folder(cluster_directory, node) / "pods" / f"{namespace}_{name}_{uid}"


def _parts(count: int) -> int:
    """How many equal parts the Pod half is cut into: the next power of two (CIDRs must be aligned)."""
    parts = 1
    while parts < count:
        parts *= 2
    return parts


@dataclass(frozen=True)
class NodeLayout:
    """One node of a cluster: saved in its folder, read by its agent, by `nodes.kill/start` and by `down`."""

    name: str
    block: int
    """The cluster's block N of 10.213.N.0/24 (`network.Block`)."""
    count: int
    """How many nodes the cluster has."""

    @property
    def index(self) -> int:
        return node_index(self.name)

    @property
    def size(self) -> int:
        return POD_HALF // _parts(self.count)

    @property
    def pod_cidr(self) -> str:
        prefix = 32 - (self.size.bit_length() - 1)
        return f"10.213.{self.block}.{self.index * self.size}/{prefix}"

    @property
    def first_host(self) -> int:
        return max(self.index * self.size, 2)

    @property
    def last_host(self) -> int:
        return self.index * self.size + self.size - 1

    @property
    def hosts(self) -> range:
        """Last octets of this node's Pod addresses."""
        return range(self.first_host, self.last_host + 1)

    @property
    def max_pods(self) -> int:
        return min(MAX_PODS, len(self.hosts))

    @property
    def cgroup_parent(self) -> str:
        """The cgroup of everything the node runs (its agent and every process of its Pods)."""
        return f"jobqueue-jqbr{self.block}-{folder_name(self.name)}"

    def owns_netns(self, netns: str) -> bool:
        """Is `netns` (named jq<block>p<host>, see `network.Block.netns`) one of this node's Pods'?"""
        prefix = f"jq{self.block}p"
        host = netns[len(prefix) :] if netns.startswith(prefix) else ""
        return host.isdigit() and int(host) in self.hosts

    def save(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / RECORD_FILE).write_text(json.dumps(asdict(self)))

    @classmethod
    def load(cls, folder: Path) -> NodeLayout | None:
        try:
            return cls(**json.loads((folder / RECORD_FILE).read_text()))
        except (OSError, ValueError, TypeError):
            return None


def layouts(block: int, count: int) -> list[NodeLayout]:
    return [NodeLayout(name, block, count) for name in node_names(count)]


def node_folders(cluster_directory: Path) -> list[Path]:
    """Folders of the nodes a cluster folder holds (those with a layout record), first node first."""
    found = [p for p in cluster_directory.glob(f"{AGENT_FOLDER}*") if (p / RECORD_FILE).is_file()]
    return sorted(found, key=lambda p: (len(p.name), p.name))
