"""Services for Pods and host commands: ClusterIPs on the bridge, names in hosts files, a TCP forwarder.

The apiserver hands out ClusterIPs from the cluster's block (10.213.N.128/25, see `network`). The
cluster's `cloud` process puts each one on the bridge and its forwarder listens there on the Service's
ports, connecting each client to a ready endpoint from the EndpointSlices the controller-manager writes
(round robin): `ServiceTable`. Every node agent writes the Service names into its Pods' hosts files from
the ClusterIPs it reads from the API itself (`ServiceNames`), so no node depends on another node or on a
file of the cloud process; the cloud process writes the hosts file for host commands
(`python -m jobqueue_devenv exec`). Only TCP is forwarded. A headless Service has no address and nothing to
forward; the Pods it names (a StatefulSet's, `<pod>.<service>.<ns>.svc`) go into the same hosts files with
their own addresses, from its EndpointSlices (`headless_pods`), as cluster DNS would answer.

The forwarder ends a client's connection when its endpoint goes silent (`ENDPOINT_KEEPALIVE`): on a real
cluster the client talks to the Pod's address itself, and its own TCP keepalive finds a dead node's Pod
gone; here the client talks to the forwarder, which would otherwise hold the connection open for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import threading
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import names, network

log = logging.getLogger("node-agent.services")

ServiceKey = tuple[str, str]
Endpoints = dict[str, list[tuple[str, int]]]
"""Service port name -> ready (IP, port) pairs."""

CONNECT_SECONDS = 3.0
ENDPOINT_KEEPALIVE = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
"""Probes on each connection to an endpoint: one whose node lost power (no FIN, no RST ever comes) ends
within 25 s of its last byte, and so does the client's connection. A client that sets no keepalive of its
own is thus treated more kindly here than on a real cluster (docs/local-cluster.md)."""
KUBERNETES: ServiceKey = ("default", "kubernetes")


class Forwarder:
    """Listens on (Service address, port) and splices each connection to one ready endpoint."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.servers: dict[tuple[ServiceKey, str, int], asyncio.Server] = {}
        self.endpoints: dict[ServiceKey, Endpoints] = {}
        self.turn = itertools.count()
        threading.Thread(target=self.loop.run_forever, name="forwarder", daemon=True).start()

    def serve(self, key: ServiceKey, address: str, ports: Mapping[str, int]) -> None:
        """Listen on exactly `ports` (name -> port) of `address` for the Service `key`."""
        asyncio.run_coroutine_threadsafe(self._serve(key, address, dict(ports)), self.loop).result(10)

    def set_endpoints(self, key: ServiceKey, endpoints: Endpoints) -> None:
        self.endpoints[key] = endpoints

    async def _serve(self, key: ServiceKey, address: str, ports: dict[str, int]) -> None:
        wanted = {(key, name, port) for name, port in ports.items()}
        for server_key in [k for k in self.servers if k[0] == key and k not in wanted]:
            self.servers.pop(server_key).close()
        for server_key in wanted - self.servers.keys():
            _, name, port = server_key

            async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, name: str = name) -> None:
                await self._connect(key, name, reader, writer)

            try:
                self.servers[server_key] = await asyncio.start_server(accept, address, port, reuse_address=True)
            except OSError as exc:
                log.error("service %s/%s: cannot listen on %s:%d: %s", *key, address, port, exc)

    async def _connect(
        self, key: ServiceKey, port_name: str, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        targets = list(self.endpoints.get(key, {}).get(port_name, []))
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        if targets:
            first = next(self.turn) % len(targets)
            for ip, port in targets[first:] + targets[:first]:
                try:
                    upstream = await asyncio.wait_for(asyncio.open_connection(ip, port), CONNECT_SECONDS)
                    _keep_alive(upstream[1])
                    break
                except (TimeoutError, OSError):
                    continue
        if upstream is None:
            writer.close()  # no ready endpoint: the client sees the connection closed
            return
        try:
            await asyncio.gather(_pipe(reader, upstream[1]), _pipe(upstream[0], writer))
        finally:
            for side in (writer, upstream[1]):
                with contextlib.suppress(OSError, RuntimeError):
                    side.close()


def _keep_alive(writer: asyncio.StreamWriter) -> None:
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for option, value in ENDPOINT_KEEPALIVE.items():
        sock.setsockopt(socket.IPPROTO_TCP, option, value)


async def _pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
    """Copy one direction until end of file, then half-close; on an error, close the other side too."""
    try:
        while data := await source.read(65536):
            sink.write(data)
            await sink.drain()
        if sink.can_write_eof():
            sink.write_eof()
    except (OSError, RuntimeError):
        sink.close()


class HostsFiles:
    """The hosts files of every Pod of a node (or the one for host commands), rewritten when Services change."""

    def __init__(self, host_file: Path | None = None, host_base: str = "") -> None:
        self.lock = threading.Lock()
        self.services: list[names.ServiceAddress] = []
        self.named_pods: list[names.PodAddress] = []
        """The Pods of headless Services."""
        self.pods: dict[str, tuple[str, str, str]] = {}
        self.host_file, self.host_base = host_file, host_base
        self._write_all()

    def pod_hosts(self, namespace: str, name: str, ip: str) -> str:
        return names.hosts_file(self.services, namespace, name, ip, pods=self.named_pods)

    def register(self, path: str, namespace: str, name: str, ip: str) -> None:
        with self.lock:
            self.pods[path] = (namespace, name, ip)
            names.rewrite_in_place(path, self.pod_hosts(namespace, name, ip))

    def unregister(self, path: str) -> None:
        with self.lock:
            self.pods.pop(path, None)

    def set_services(self, services: list[names.ServiceAddress], pods: list[names.PodAddress] | None = None) -> None:
        """The Services' addresses and, unless None (unchanged), the Pods of headless Services."""
        with self.lock:
            self.services = sorted(services)
            if pods is not None:
                self.named_pods = sorted(pods)
            self._write_all()

    def _write_all(self) -> None:
        if self.host_file is not None:
            text = names.hosts_file(self.services, None, base=self.host_base, pods=self.named_pods)
            names.rewrite_in_place(str(self.host_file), text)
        for path, (namespace, name, ip) in self.pods.items():
            with contextlib.suppress(OSError):  # the Pod is being torn down
                names.rewrite_in_place(path, self.pod_hosts(namespace, name, ip))


def ready_endpoints(slices: Sequence[Mapping[str, Any]]) -> Endpoints:
    """Port name -> (address, port) of every ready endpoint in a Service's EndpointSlices (pure)."""
    found: Endpoints = {}
    for piece in slices:
        for port in piece.get("ports") or []:
            if port.get("protocol", "TCP") != "TCP" or port.get("port") is None:
                continue
            targets = found.setdefault(port.get("name") or "", [])
            for endpoint in piece.get("endpoints") or []:
                if (endpoint.get("conditions") or {}).get("ready") is False:
                    continue
                targets.extend((address, int(port["port"])) for address in endpoint.get("addresses") or [])
    return {name: sorted(set(targets)) for name, targets in found.items()}


def headless_pods(headless: Collection[ServiceKey], slices: Iterable[Mapping[str, Any]]) -> list[names.PodAddress]:
    """The Pods each headless Service names: the endpoints of its EndpointSlices that have a hostname (the
    controller sets it for a Pod whose `subdomain` is the Service) and are not unready (a Service that
    publishes unready Pods has them all ready) (pure)."""
    found: set[names.PodAddress] = set()
    for piece in slices:
        meta = piece.get("metadata") or {}
        key = (meta.get("namespace", ""), (meta.get("labels") or {}).get("kubernetes.io/service-name", ""))
        if key not in headless:
            continue
        for endpoint in piece.get("endpoints") or []:
            hostname = endpoint.get("hostname")
            if not hostname or (endpoint.get("conditions") or {}).get("ready") is False:
                continue
            found.update(names.PodAddress(*key, hostname, address) for address in endpoint.get("addresses") or [])
    return sorted(found)


def is_headless(service: Mapping[str, Any]) -> bool:
    return (service.get("spec") or {}).get("clusterIP") == "None"


def cluster_ip(service: Mapping[str, Any]) -> str | None:
    """The address a Service is reached at, or None (deleted, headless, ExternalName) (pure)."""
    address = (service.get("spec") or {}).get("clusterIP")
    return None if address in (None, "", "None") else str(address)


def tcp_ports(service: Mapping[str, Any]) -> dict[str, int]:
    """Port name -> port of a Service's TCP ports (pure)."""
    return {
        p.get("name") or "": int(p["port"])
        for p in (service.get("spec") or {}).get("ports") or []
        if p.get("protocol", "TCP") == "TCP"
    }


class ServiceNames:
    """A node agent's view of the Services and the EndpointSlices (fed by informers): the Services' names,
    and the names of the headless Services' Pods, in its Pods' hosts files."""

    def __init__(self, hosts: HostsFiles) -> None:
        self.hosts = hosts
        self.lock = threading.Lock()
        self.addresses: dict[ServiceKey, str] = {}
        self.headless: set[ServiceKey] = set()
        self.slices: dict[str, dict[str, Any]] = {}
        self.pods: list[names.PodAddress] = []

    def address_of(self, namespace: str, name: str) -> str | None:
        return self.addresses.get((namespace, name))

    def on_slice(self, kind: str, piece: dict[str, Any]) -> None:
        with self.lock:
            if kind == "DELETED":
                self.slices.pop(piece["metadata"]["uid"], None)
            else:
                self.slices[piece["metadata"]["uid"]] = piece
            self._publish_pods()

    def _publish_pods(self) -> None:
        pods = headless_pods(self.headless, self.slices.values())
        if pods != self.pods:
            self.pods = pods
            self._publish(pods)

    def _publish(self, pods: list[names.PodAddress] | None = None) -> None:
        services = [names.ServiceAddress(ns, name, ip) for (ns, name), ip in self.addresses.items()]
        self.hosts.set_services(services, pods)

    def on_service(self, kind: str, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        key = (meta["namespace"], meta["name"])
        address = cluster_ip(service) if kind != "DELETED" else None
        with self.lock:
            if kind != "DELETED" and is_headless(service):
                self.headless.add(key)
            else:
                self.headless.discard(key)
            self._publish_pods()
            if address is None:
                if self.addresses.pop(key, None) is None:
                    return
            elif self.addresses.get(key) == address:
                return
            else:
                self.addresses[key] = address
            self._publish()


class ServiceTable:
    """The cloud's Service table (fed by two informers): ClusterIPs on the bridge, the forwarder, host names."""

    def __init__(self, block: network.Block, forwarder: Forwarder, hosts: HostsFiles, apiserver_port: int) -> None:
        self.block, self.forwarder, self.hosts = block, forwarder, hosts
        self.apiserver_port = apiserver_port
        self.lock = threading.Lock()
        self.addresses: dict[ServiceKey, str] = {}
        self.headless: set[ServiceKey] = set()
        self.slices: dict[str, dict[str, Any]] = {}

    def _publish(self) -> None:
        """The hosts file for host commands: the Services' names and the headless Services' Pods."""
        services = [names.ServiceAddress(ns, name, ip) for (ns, name), ip in self.addresses.items()]
        self.hosts.set_services(services, headless_pods(self.headless, self.slices.values()))

    def on_service(self, kind: str, service: dict[str, Any]) -> None:
        meta = service["metadata"]
        key = (meta["namespace"], meta["name"])
        address = cluster_ip(service) if kind != "DELETED" else None
        with self.lock:
            old = self.addresses.pop(key, None)
            if old is not None and old != address:
                self.forwarder.serve(key, old, {})
                network.remove_service_address(self.block, old)
            if address is not None:
                self.addresses[key] = address
                if old != address:
                    network.add_service_address(self.block, address)
                ports = tcp_ports(service)
                self.forwarder.serve(key, address, ports)
                if key == KUBERNETES:
                    self.forwarder.set_endpoints(key, {name: [("127.0.0.1", self.apiserver_port)] for name in ports})
            if kind != "DELETED" and is_headless(service):
                self.headless.add(key)
            else:
                self.headless.discard(key)
            self._publish()

    def on_slice(self, kind: str, piece: dict[str, Any]) -> None:
        meta = piece["metadata"]
        service = (meta.get("labels") or {}).get("kubernetes.io/service-name")
        if not service:
            return
        with self.lock:
            if kind == "DELETED":
                self.slices.pop(meta["uid"], None)
            else:
                self.slices[meta["uid"]] = piece
            key = (meta["namespace"], service)
            if key == KUBERNETES:
                return
            mine = [
                s
                for s in self.slices.values()
                if s["metadata"]["namespace"] == key[0]
                and (s["metadata"].get("labels") or {}).get("kubernetes.io/service-name") == key[1]
            ]
            self.forwarder.set_endpoints(key, ready_endpoints(mine))
            if key in self.headless:
                self._publish()
