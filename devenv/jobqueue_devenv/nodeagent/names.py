"""Hosts files that make Service names, and the Pod names of headless Services, resolve, for Pods and for host
commands (pure rendering)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

CLUSTER_DOMAIN = "cluster.local"


@dataclass(frozen=True, order=True)
class ServiceAddress:
    namespace: str
    name: str
    ip: str


def service_names(service: ServiceAddress, own_namespace: str | None) -> list[str]:
    """The names a Pod in `own_namespace` (None: a host command) can use for `service`."""
    full = f"{service.name}.{service.namespace}"
    names = [f"{full}.svc.{CLUSTER_DOMAIN}", f"{full}.svc", full]
    if own_namespace == service.namespace:
        names.append(service.name)
    return names


@dataclass(frozen=True, order=True)
class PodAddress:
    """A Pod a headless Service names (a StatefulSet's Pod whose `subdomain` is the Service's name)."""

    namespace: str
    service: str
    hostname: str
    ip: str


def pod_names(pod: PodAddress, own_namespace: str | None) -> list[str]:
    """The names cluster DNS gives a headless Service's Pod (`<hostname>.<service>.<ns>.svc...`)."""
    full = f"{pod.hostname}.{pod.service}.{pod.namespace}"
    names = [f"{full}.svc.{CLUSTER_DOMAIN}", f"{full}.svc", full]
    if own_namespace == pod.namespace:
        names.append(f"{pod.hostname}.{pod.service}")
    return names


def hosts_file(
    services: Iterable[ServiceAddress],
    own_namespace: str | None,
    own_name: str | None = None,
    own_ip: str | None = None,
    base: str = "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n",
    pods: Iterable[PodAddress] = (),
) -> str:
    lines = [base.rstrip("\n"), "# Services of the local cluster, written by the jobqueue node agent"]
    if own_name and own_ip:
        lines.append(f"{own_ip}\t{own_name}")
    for service in sorted(services):
        lines.append(f"{service.ip}\t{' '.join(service_names(service, own_namespace))}")
    for pod in sorted(pods):
        lines.append(f"{pod.ip}\t{' '.join(pod_names(pod, own_namespace))}")
    return "\n".join(lines) + "\n"


RESOLV_CONF = """# Written by the jobqueue node agent: names resolve through /etc/hosts only.
# No nameserver is reachable from a Pod's network namespace, so fail fast instead of waiting.
options timeout:1 attempts:1
"""


def rewrite_in_place(path: str, text: str) -> None:
    """Overwrite a file without replacing its inode: it is bind-mounted over /etc/hosts elsewhere."""
    with open(path, "a+") as handle:
        handle.seek(0)
        if handle.read() == text:
            return
        handle.seek(0)
        handle.truncate()
        handle.write(text)
