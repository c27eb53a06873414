"""`cluster_names`: a cluster name looked up in the cloud's hosts file, in this process only for the block."""

from __future__ import annotations

import socket
from pathlib import Path

from jobqueue_devenv.faults import cluster_names
from jobqueue_devenv.nodeagent import cloud

HOSTS = """127.0.0.1 localhost
# Services of the local cluster, written by the jobqueue node agent
10.213.0.129\tkubernetes.default.svc.cluster.local kubernetes.default.svc
10.213.0.7\tq-redis-0.q-redis.ns.svc.cluster.local q-redis-0.q-redis.ns.svc
"""


def test_a_name_gets_the_address_of_the_line_that_names_it() -> None:
    assert cluster_names.address_of(HOSTS, "q-redis-0.q-redis.ns.svc.cluster.local") == "10.213.0.7"
    assert cluster_names.address_of(HOSTS, "kubernetes.default.svc") == "10.213.0.129"
    assert cluster_names.address_of(HOSTS, "q-redis-1.q-redis.ns.svc.cluster.local") is None
    assert cluster_names.address_of(HOSTS, "Services") is None  # a comment names nothing


def test_inside_the_block_the_process_resolves_the_file_s_names_and_afterwards_no_more(tmp_path: Path) -> None:
    hosts = cloud.hosts_file(tmp_path)
    hosts.parent.mkdir(parents=True)
    hosts.write_text("127.0.0.9\tmember-0.members.ns.svc.cluster.local\n")
    name = "member-0.members.ns.svc.cluster.local"
    with cluster_names.resolved(tmp_path):
        assert socket.getaddrinfo(name, 6379, type=socket.SOCK_STREAM)[0][4][:2] == ("127.0.0.9", 6379)
        hosts.write_text("127.0.0.10\tmember-0.members.ns.svc.cluster.local\n")  # the Pod came back elsewhere
        assert socket.getaddrinfo(name, 6379, type=socket.SOCK_STREAM)[0][4][:2] == ("127.0.0.10", 6379)
        assert socket.getaddrinfo("127.0.0.1", 1, type=socket.SOCK_STREAM)[0][4][:2] == ("127.0.0.1", 1)
    assert socket.getaddrinfo.__module__ == "socket"  # the original again
