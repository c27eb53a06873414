"""End everything a node agent started, even when the agent itself was killed: `down` and `nodes.start` rely on this.

A Pod process is found two ways: it lives in one of the Pod network namespaces of the node's addresses
(its layout record is in the node's folder), or it carries `JQ_NODE_AGENT_DIR=<node folder>` in its
environment. The namespace is the reliable one: programs such as redis-server overwrite their
environment block with their process title, so /proc/PID/environ no longer shows the variable.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import time
from pathlib import Path

from jobqueue_devenv.nodeagent import layout, network, runc
from jobqueue_devenv.nodeagent.containers import MARKER

PODS_FOLDER = "pods"


def agent_folder(cluster_directory: Path, node: str = layout.FIRST_NODE) -> Path:
    return layout.agent_folder(cluster_directory, node)


def pod_processes(folder: Path) -> list[int]:
    """Pids of live processes started for Pods by the agent whose folder is `folder`."""
    marker = b"\0" + f"{MARKER}={folder.resolve()}".encode() + b"\0"
    namespaces = _pod_namespaces(folder)
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            in_pod = os.stat(f"{entry.path}/ns/net").st_ino in namespaces
            if in_pod or marker in b"\0" + Path(entry.path, "environ").read_bytes() + b"\0":
                found.append(int(entry.name))
        except OSError:
            continue
    return found


def _owned(folder: Path) -> tuple[network.Block, layout.NodeLayout] | None:
    """The node's block and layout, if the block's bridge is (still, or no longer anyone's) this cluster's."""
    place = layout.NodeLayout.load(folder)
    if place is None:
        return None
    block = network.Block(place.block)
    if network.bridge_owner(block.bridge) not in (None, str(folder.resolve().parent)):
        return None
    return block, place


def _pod_namespaces(folder: Path) -> set[int]:
    """Inode numbers of the Pod network namespaces of the node whose folder is `folder`."""
    owned = _owned(folder)
    if owned is None:
        return set()
    inodes = set()
    for name in network.existing_netns():
        if owned[1].owns_netns(name):
            with contextlib.suppress(OSError):
                inodes.add(os.stat(network.NETNS_RUN / name).st_ino)
    return inodes


def end_pod_processes(folder: Path, grace: float = 1.0) -> list[int]:
    """SIGTERM every Pod process, SIGKILL what is left after `grace` seconds. Returns the pids found."""
    pids = pod_processes(folder)
    for pid in pids:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and pod_processes(folder):
        time.sleep(0.05)
    for _ in range(50):
        left = pod_processes(folder)
        if not left:
            break
        for pid in left:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    runc.delete_all(runc.state_root(folder))  # their runc records and cgroups
    return pids


def remove_node_network(folder: Path) -> None:
    """Delete the Pod network namespaces (and veths) of the node whose folder is `folder`."""
    owned = _owned(folder)
    if owned is not None:
        network.remove_sandboxes(owned[0], owned[1].owns_netns)


def reset_node(folder: Path) -> list[int]:
    """Make a node's folder what a rebooted machine finds: no Pod process, network namespace, container or Pod
    folder of before (the layout record stays). Returns the pids that were still running."""
    place = layout.NodeLayout.load(folder)
    if place is not None:
        runc.kill_node_cgroup(place.cgroup_parent)
    pids = end_pod_processes(folder)
    remove_node_network(folder)
    shutil.rmtree(folder / PODS_FOLDER, ignore_errors=True)
    shutil.rmtree(runc.state_root(folder), ignore_errors=True)
    if place is not None:
        runc.remove_cgroup_parent(place.cgroup_parent)
    return pids


def _adopt_single_agent_cluster(cluster_directory: Path) -> None:
    """A cluster started before nodes had layouts had one agent that owned the bridge and kept its record:
    give it the records `clean_up` reads, so `down` of such a cluster still leaves nothing behind."""
    folder = agent_folder(cluster_directory)
    block = network.Block.load(folder)
    if block is None or (folder / layout.RECORD_FILE).exists():
        return
    layout.NodeLayout(layout.FIRST_NODE, block.index, 1).save(folder)
    block.save(cluster_directory)
    if network.bridge_owner(block.bridge) == str(folder.resolve()):
        network.set_owner(block, cluster_directory)


def clean_up(cluster_directory: Path) -> list[int]:
    """Stop the Pod processes of every node of a cluster and remove its Pod network and cgroups. Returns the
    pids that were running."""
    _adopt_single_agent_cluster(cluster_directory)
    pids: list[int] = []
    for folder in layout.node_folders(cluster_directory):
        pids += end_pod_processes(folder)
        remove_node_network(folder)
        place = layout.NodeLayout.load(folder)
        if place is not None:
            runc.kill_node_cgroup(place.cgroup_parent)  # anything else the node's agent had started
            runc.remove_cgroup_parent(place.cgroup_parent)
    block = network.Block.load(cluster_directory)
    if block is not None:
        owner = network.bridge_owner(block.bridge)
        if owner is None or owner == str(cluster_directory.resolve()):
            network.remove_block(block)
    for folder in layout.node_folders(cluster_directory):  # the old cgroup parent, now that its containers are gone
        legacy = network.Block.load(folder)
        if legacy is not None:
            runc.remove_cgroup_parent(f"jobqueue-{legacy.bridge}")
    return pids
