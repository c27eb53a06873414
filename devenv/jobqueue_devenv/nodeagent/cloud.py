"""The cluster's "cloud": what a real cluster gets from its network and its storage, not from any one node.

Run as `python -m jobqueue_devenv.nodeagent.cloud --kubeconfig PATH --folder DIR`; `up` starts it after the
apiserver and before the node agents, `down` stops it, and `nodes.kill` never touches it. It

- forwards Services (`services.ServiceTable`): puts every ClusterIP on the cluster's bridge and connects
  each client to a ready endpoint on whichever node it runs (a real cluster has kube-proxy on every node);
- writes the hosts file for host commands (`python -m jobqueue_devenv exec`): `<folder>/hosts`;
- provisions the `local-path` PersistentVolumes as network disks (`storage.Provisioner`): one provisioner
  for the whole cluster, whichever node dies.

So a node's death takes none of this with it. The bridge itself was claimed by `up` (`network.claim_block`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import urllib.parse
from pathlib import Path
from typing import Final

import yaml
from kubernetes import client, config

from jobqueue_devenv.nodeagent import network, node, storage
from jobqueue_devenv.nodeagent.informer import Informer
from jobqueue_devenv.nodeagent.services import Forwarder, HostsFiles, ServiceTable

log = logging.getLogger("cloud")

FOLDER: Final = "cloud"
"""In the cluster folder: the hosts file for host commands, the volumes' folders, the ready mark."""
HOSTS_FILE: Final = "hosts"
READY_FILE: Final = "ready"
"""Written once the Services and volumes are followed: `up` waits for it."""
LOOP_SECONDS: Final = 0.5
RESYNC_SECONDS: Final = 5.0


def folder(cluster_directory: Path) -> Path:
    return cluster_directory / FOLDER


def hosts_file(cluster_directory: Path) -> Path:
    return folder(cluster_directory) / HOSTS_FILE


def apiserver_port(kubeconfig: Path) -> int:
    """Where `kubernetes.default.svc` forwards to: the apiserver's port on 127.0.0.1."""
    server = yaml.safe_load(kubeconfig.read_text())["clusters"][0]["cluster"]["server"]
    return urllib.parse.urlsplit(server).port or 443


def run(kubeconfig: Path, directory: Path, block: network.Block) -> None:
    api_client = config.new_client_from_config(config_file=str(kubeconfig))
    core, discovery = client.CoreV1Api(api_client), client.DiscoveryV1Api(api_client)
    stopping = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopping.set())
    signal.signal(signal.SIGINT, lambda *_: stopping.set())
    directory.mkdir(parents=True, exist_ok=True)
    hosts = HostsFiles(directory / HOSTS_FILE, Path("/etc/hosts").read_text())
    table = ServiceTable(block, Forwarder(), hosts, apiserver_port(kubeconfig))
    provisioner = storage.Provisioner(api_client, directory)
    provisioner.ensure_class()
    informers = [
        Informer("services", core.list_service_for_all_namespaces, table.on_service, stopping),
        Informer("endpointslices", discovery.list_endpoint_slice_for_all_namespaces, table.on_slice, stopping),
        Informer("persistentvolumes", core.list_persistent_volume, provisioner.on_volume, stopping),
        Informer(
            "persistentvolumeclaims",
            core.list_persistent_volume_claim_for_all_namespaces,
            provisioner.on_claim,
            stopping,
        ),
    ]
    for informer in informers:
        informer.start()
    for informer in informers:
        while not informer.synced.wait(LOOP_SECONDS) and not stopping.is_set():
            pass
    (directory / READY_FILE).write_text("ready\n")
    log.info("following Services (bridge %s, Service CIDR %s) and volumes", block.bridge, block.service_cidr)
    resync = node.Duty(provisioner.resync, RESYNC_SECONDS)
    while not stopping.is_set():
        resync.run_if_due()
        stopping.wait(LOOP_SECONDS)
    log.info("stopped")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--kubeconfig", required=True, type=Path)
    parser.add_argument("--folder", required=True, type=Path, help="the cloud's folder in the cluster folder")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    cluster_directory = args.kubeconfig.resolve().parent
    block = network.Block.load(cluster_directory)
    if block is None:
        raise SystemExit(f"no network record ({network.RECORD_FILE}) in {cluster_directory}: `up` claims the block")
    run(args.kubeconfig, args.folder, block)


if __name__ == "__main__":
    main()
