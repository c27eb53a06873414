"""`kubectl jobqueue send`: tasks sent to one queue through the JobQueue's own broker.

On a sentinel:// broker (the managed high-availability one, or an external Sentinel group) the plugin asks
the Sentinels for the master named in the broker's Secret and sends with the project's confirming producer
(`jobqueue_worker.confirm`): a task it reports sent is held by a replica too, and survives a failover."""

from __future__ import annotations

import functools
import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis
from kombu.exceptions import OperationalError

from jobqueue_kubectl.cluster import Body, Cluster
from jobqueue_kubectl.errors import PluginError
from jobqueue_operator import naming
from jobqueue_operator.broker import BrokerError, client_for, is_sentinel
from jobqueue_worker import confirm, producer
from jobqueue_worker.contract import SENTINEL_MASTER_NAME, priority_steps
from jobqueue_worker.producer import parse_arg

__all__ = ["parse_arg", "send"]

TIMEOUT_SECONDS = 3.0


def where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or 6379}"


def broker_secret(body: Body) -> tuple[str, str]:
    """(Secret name, key) of the JobQueue's broker URL: the user's for an external broker, else the managed one's."""
    meta, spec = body["metadata"], body.get("spec") or {}
    external = (spec.get("broker") or {}).get("external")
    if external:
        ref = external["urlSecretRef"]
        return ref["name"], ref["key"]
    return naming.redis_secret(meta["name"]), naming.URL_KEY


def broker(api: Cluster, body: Body) -> tuple[str, str]:
    """The JobQueue's broker URL and its Sentinel master name, from the broker's Secret: its `masterName` key
    (the managed high-availability broker's Secret has one; an external broker's may), else the managed
    broker's name, as the workers do (JOBQUEUE_BROKER_MASTER_NAME from the same key). The name matters only
    for a sentinel:// URL."""
    name, key = broker_secret(body)
    namespace = body["metadata"]["namespace"]
    data = api.secret_data(namespace, name)
    if key not in data:
        raise PluginError(f"Secret {namespace}/{name} has no key {key}")
    return data[key], data.get(naming.MASTER_NAME_KEY) or SENTINEL_MASTER_NAME


def broker_url(api: Cluster, body: Body) -> str:
    """The broker URL of the JobQueue, from its Secret (the managed broker's, or the user's)."""
    return broker(api, body)[0]


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def reachable_url(api: Cluster, body: Body, url: str) -> str:
    """`url`, or for a managed single broker whose Service name does not resolve here (outside the cluster),
    the same URL on its Pod's IP (reachable where Pod IPs are routed, e.g. a local cluster). A sentinel://
    URL stays: the Sentinels name the master by a name of the cluster's DNS, which the Pod's IP would not
    make resolve (`ping` says where to run instead)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    external = ((body.get("spec") or {}).get("broker") or {}).get("external")
    if external or is_sentinel(url) or _resolves(host):
        return url
    meta = body["metadata"]
    ip = api.pod_ip(meta["namespace"], f"{naming.redis(meta['name'])}-0")
    if not ip:
        return url
    netloc = parts.netloc.replace(host, ip, 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ping(url: str, master_name: str = SENTINEL_MASTER_NAME) -> None:
    """Refuse an unreachable broker with a one-line error saying how to reach it from outside. A sentinel://
    URL is asked for the master `master_name`, and the master is pinged."""
    try:
        with client_for(url, TIMEOUT_SECONDS, master_name) as connection:
            connection.ping()
    except (redis.RedisError, BrokerError, OSError) as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if is_sentinel(url):
            raise PluginError(
                f"cannot reach the broker's master {master_name!r} through the Sentinels at {where(url)}: {text} "
                "(the Sentinels name the master by its in-cluster name: run this where the cluster's names "
                "resolve, e.g. on the local cluster python -m jobqueue_devenv exec -- kubectl jobqueue send ...)"
            ) from None
        raise PluginError(
            f"cannot reach the broker at {where(url)}: {text} (from outside the cluster: kubectl port-forward "
            "to it, then pass --broker-url)"
        ) from None


def printable(text: str) -> str:
    """`text` with control characters escaped, on one line (kombu's priority queue names hold some)."""
    return "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)


def send(
    api: Cluster,
    body: Body,
    queue: str,
    task: str,
    kwargs: dict[str, Any],
    count: int,
    priority: int | None,
    override_url: str | None = None,
) -> list[str]:
    """Send `count` tasks; their ids. Refuses a queue the JobQueue does not have, and an unreachable broker."""
    meta, spec = body["metadata"], body.get("spec") or {}
    queues = {q["name"]: q for q in spec.get("queues") or []}
    if queue not in queues:
        raise PluginError(
            f"JobQueue {meta['namespace']}/{meta['name']} has no queue {queue} (its queues: {', '.join(queues)})"
        )
    url, master_name = broker(api, body)
    url = override_url or reachable_url(api, body, url)
    ping(url, master_name)
    steps = priority_steps(int(queues[queue].get("priorityLevels", 4)))
    app = producer.producer_app(url, priority_steps=steps, master_name=master_name)
    ids: list[str] = []
    try:
        with app.producer_or_acquire() as sender:
            for _ in range(count):
                send_one = functools.partial(
                    app.send_task, task, kwargs=kwargs, queue=queue, priority=priority, producer=sender
                )
                ids.append(confirm.while_no_replica(send_one).id)
    except confirm.NotReplicated as exc:
        raise PluginError(f"{len(ids)} of {count} sent and confirmed, then: {exc}") from None
    except (redis.RedisError, OperationalError) as exc:  # the broker failed for longer than the retries
        text = printable(" ".join(str(exc).split()) or type(exc).__name__)
        raise PluginError(f"{len(ids)} of {count} sent, then the broker failed: {text}") from None
    finally:
        app.close()
    return ids
