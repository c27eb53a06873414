"""The local cluster's names resolved in this process, as a Pod resolves them: for host code that must follow
what the cluster's own servers answer with names.

A Sentinel answers "where is the master?" with the member Pod's DNS name (the managed broker announces
names, not IPs, so a member that comes back with a new IP keeps its place). The host reaches Pod and Service
IPs but resolves no cluster name; the cloud process writes every Service's and every headless Service Pod's
name to a hosts file (`nodeagent.cloud.hosts_file`, the one `python -m jobqueue_devenv exec` mounts over
/etc/hosts). Inside `resolved`, `socket.getaddrinfo` looks a name up in that file first (read at each look,
so a Pod that came back with a new IP is followed), and everything else as before. Only names the file
holds change: the rest of the process resolves as it always does.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import cloud


def address_of(hosts: str, name: str) -> str | None:
    """The address a hosts file's text gives `name` (the last line naming it, as the file is rewritten in
    place), or None."""
    found = None
    for line in hosts.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and name in fields[1:]:
            found = fields[0]
    return found


@contextlib.contextmanager
def resolved(cluster_directory: Path) -> Iterator[None]:
    """Names of the cluster in `cluster_directory` resolve in this process for the block (every thread)."""
    path = cloud.hosts_file(cluster_directory)
    original = socket.getaddrinfo

    def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(host, str):
            with contextlib.suppress(OSError):
                host = address_of(path.read_text(), host) or host
        return original(host, port, *args, **kwargs)

    socket.getaddrinfo = getaddrinfo
    try:
        yield
    finally:
        socket.getaddrinfo = original
