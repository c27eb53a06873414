"""What a node agent learns of the Services (their ClusterIPs, straight from the API) and writes into its Pods'
hosts files: no file or process of another node is involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import names
from jobqueue_devenv.nodeagent.services import HostsFiles, ServiceNames, cluster_ip, tcp_ports


def service(name: str, ip: str | None, ports: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {"metadata": {"namespace": "shop", "name": name}, "spec": {"clusterIP": ip, "ports": ports or []}}


def test_only_services_with_a_cluster_ip_have_an_address() -> None:
    assert cluster_ip(service("redis", "10.213.4.130")) == "10.213.4.130"
    assert cluster_ip(service("headless", "None")) is None
    assert cluster_ip(service("external", None)) is None


def test_only_tcp_ports_are_forwarded_by_name() -> None:
    ports = [{"name": "redis", "port": 6379}, {"port": 53, "protocol": "UDP"}, {"port": 80, "protocol": "TCP"}]
    assert tcp_ports(service("x", "10.213.4.131", ports)) == {"redis": 6379, "": 80}


def test_a_pod_s_hosts_file_follows_the_services_cluster_ips(tmp_path: Path) -> None:
    hosts_path = tmp_path / "hosts"
    seen = ServiceNames(HostsFiles())
    seen.hosts.register(str(hosts_path), "shop", "worker-0", "10.213.4.40")
    seen.on_service("ADDED", service("redis", "10.213.4.130"))
    seen.on_service("ADDED", service("headless", "None"))
    assert seen.address_of("shop", "redis") == "10.213.4.130"
    assert seen.address_of("shop", "headless") is None
    text = hosts_path.read_text()
    assert "10.213.4.40\tworker-0" in text
    assert "10.213.4.130\tredis.shop.svc.cluster.local redis.shop.svc redis.shop redis\n" in text

    seen.on_service("DELETED", service("redis", "10.213.4.130"))
    assert "redis" not in hosts_path.read_text()
    assert seen.hosts.services == []
    assert names.hosts_file([], "shop", "worker-0", "10.213.4.40") == hosts_path.read_text()
