"""End everything a node agent started, even when the agent itself was killed: `down` relies on this.

A Pod process is found two ways: it lives in one of the Pod network namespaces of the agent's
block (saved in the agent's folder), or it carries `JQ_NODE_AGENT_DIR=<agent folder>` in its
environment. The namespace is the reliable one: programs such as redis-server overwrite their
environment block with their process title, so /proc/PID/environ no longer shows the variable.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path

from jobqueue_devenv.nodeagent import network, runc
from jobqueue_devenv.nodeagent.containers import MARKER

AGENT_FOLDER = "node-agent"


def agent_folder(cluster_directory: Path) -> Path:
    return cluster_directory / AGENT_FOLDER


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


def _pod_namespaces(folder: Path) -> set[int]:
    """Inode numbers of the Pod network namespaces of the agent whose folder is `folder`."""
    block = network.Block.load(folder)
    if block is None or network.bridge_owner(block.bridge) not in (None, str(folder.resolve())):
        return set()
    inodes = set()
    for name in network.existing_netns():
        if block.owns_netns(name):
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


def clean_up(cluster_directory: Path) -> list[int]:
    """Stop the Pod processes of a cluster and remove its Pod network. Returns the pids that were running."""
    folder = agent_folder(cluster_directory)
    if not folder.exists():
        return []
    pids = end_pod_processes(folder)
    block = network.Block.load(folder)
    if block is not None:
        owner = network.bridge_owner(block.bridge)
        if owner is None or owner == str(folder.resolve()):
            network.remove_block(block)
            runc.remove_cgroup_parent(runc.cgroup_parent(block.bridge))
    return pids
