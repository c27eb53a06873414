"""Freeze a managed Redis: its process stopped (SIGSTOP) so every client's commands hang, as behind a
network partition, then resumed. The local node agent runs the Redis Pod's container with runc, its
process in the Pod's network namespace and visible from the host, so it is found there: the redis-server
whose network namespace holds the broker's Pod IP (redis-server overwrites its own command line and
environment, so neither tells)."""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit


def local_addresses(fib_trie: str) -> set[str]:
    """The addresses a network namespace owns, from its /proc/<pid>/net/fib_trie ("|-- A" then "/32 host LOCAL")."""
    lines = [line.strip() for line in fib_trie.splitlines()]
    return {
        previous.removeprefix("|-- ")
        for previous, line in itertools.pairwise(lines)
        if line == "/32 host LOCAL" and previous.startswith("|-- ")
    }


def redis_pid(url: str) -> int:
    """The pid of the redis-server serving `url` (by its Pod IP); raises LookupError."""
    address = urlsplit(url).hostname or ""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if not (entry / "comm").read_text().startswith("redis-server"):
                continue
            owned = local_addresses((entry / "net" / "fib_trie").read_text())
        except OSError:
            continue
        if address in owned:
            return int(entry.name)
    raise LookupError(f"no redis-server on this host owns {address}")


@contextlib.contextmanager
def frozen(url: str) -> Iterator[int]:
    """The broker's process stopped for the duration of the block (resumed however the block ends)."""
    pid = redis_pid(url)
    os.kill(pid, signal.SIGSTOP)
    try:
        yield pid
    finally:
        os.kill(pid, signal.SIGCONT)
