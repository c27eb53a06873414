"""What a node agent learns of the Services (their ClusterIPs, straight from the API) and writes into its Pods'
hosts files: no file or process of another node is involved."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import names
from jobqueue_devenv.nodeagent.services import HostsFiles, ServiceNames, cluster_ip, headless_pods, tcp_ports


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


def endpoint_slice(service_name: str, endpoints: list[dict[str, Any]], uid: str = "s1") -> dict[str, Any]:
    labels = {"kubernetes.io/service-name": service_name}
    return {
        "metadata": {"namespace": "shop", "name": f"{service_name}-x", "uid": uid, "labels": labels},
        "endpoints": endpoints,
    }


def member(hostname: str | None, ip: str, ready: bool = True) -> dict[str, Any]:
    found: dict[str, Any] = {"addresses": [ip], "conditions": {"ready": ready}}
    if hostname:
        found["hostname"] = hostname
    return found


def test_headless_services_name_their_pods_as_cluster_dns_does(tmp_path: Path) -> None:
    """A StatefulSet's Pods under its headless Service resolve as `<pod>.<service>.<ns>.svc`, with their own
    addresses, and follow the Pods: a Pod back with a new address, a Pod gone, the Service gone."""
    hosts_path = tmp_path / "hosts"
    seen = ServiceNames(HostsFiles())
    seen.hosts.register(str(hosts_path), "shop", "client", "10.213.4.40")
    seen.on_service("ADDED", service("redis", "None"))
    seen.on_service("ADDED", service("web", "10.213.4.131"))
    seen.on_slice(
        "ADDED", endpoint_slice("redis", [member("redis-0", "10.213.4.50"), member("redis-1", "10.213.4.51")])
    )
    seen.on_slice("ADDED", endpoint_slice("web", [member("web-0", "10.213.4.60")], uid="s2"))  # not headless
    text = hosts_path.read_text()
    full = "redis-0.redis.shop.svc.cluster.local redis-0.redis.shop.svc redis-0.redis.shop redis-0.redis"
    assert f"10.213.4.50\t{full}\n" in text
    assert "10.213.4.51\tredis-1.redis.shop.svc" in text
    assert "web-0" not in text  # cluster DNS names the Pods of headless Services only

    seen.on_slice("MODIFIED", endpoint_slice("redis", [member("redis-0", "10.213.4.70"), member(None, "10.213.4.52")]))
    text = hosts_path.read_text()
    assert "10.213.4.70\tredis-0.redis.shop.svc" in text
    assert "10.213.4.50" not in text
    assert "redis-1" not in text
    assert "10.213.4.52" not in text  # no hostname: no name

    seen.on_service("DELETED", service("redis", "None"))
    assert "redis-0" not in hosts_path.read_text()


def test_unready_endpoints_get_no_name() -> None:
    slices = [endpoint_slice("redis", [member("redis-0", "10.0.0.1", ready=False), member("redis-1", "10.0.0.2")])]
    assert headless_pods({("shop", "redis")}, slices) == [names.PodAddress("shop", "redis", "redis-1", "10.0.0.2")]
    assert headless_pods(set(), slices) == []


def test_the_host_commands_hosts_file_names_them_too(tmp_path: Path) -> None:
    hosts = HostsFiles(tmp_path / "hosts", "127.0.0.1\tlocalhost\n")
    hosts.set_services([], [names.PodAddress("shop", "redis", "redis-0", "10.213.4.50")])
    text = (tmp_path / "hosts").read_text()
    assert "10.213.4.50\tredis-0.redis.shop.svc.cluster.local redis-0.redis.shop.svc redis-0.redis.shop\n" in text
