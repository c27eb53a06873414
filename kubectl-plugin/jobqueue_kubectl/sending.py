"""`kubectl jobqueue send`: tasks sent to one queue through the JobQueue's own broker."""

from __future__ import annotations

import socket
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import redis

from jobqueue_kubectl.cluster import Body, Cluster
from jobqueue_kubectl.errors import PluginError
from jobqueue_operator import naming
from jobqueue_worker import producer
from jobqueue_worker.contract import priority_steps
from jobqueue_worker.producer import parse_arg

__all__ = ["parse_arg", "send"]

TIMEOUT_SECONDS = 3.0


def where(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or 6379}"


def broker_url(api: Cluster, body: Body) -> str:
    """The broker URL of the JobQueue, from its Secret (the managed broker's, or the user's)."""
    meta, spec = body["metadata"], body.get("spec") or {}
    external = (spec.get("broker") or {}).get("external")
    if external:
        ref = external["urlSecretRef"]
        return api.secret_value(meta["namespace"], ref["name"], ref["key"])
    return api.secret_value(meta["namespace"], naming.redis_secret(meta["name"]), naming.URL_KEY)


def _resolves(host: str) -> bool:
    try:
        socket.getaddrinfo(host, None)
    except OSError:
        return False
    return True


def reachable_url(api: Cluster, body: Body, url: str) -> str:
    """`url`, or for a managed broker whose Service name does not resolve here (outside the cluster), the
    same URL on its Pod's IP (reachable where Pod IPs are routed, e.g. a local cluster)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    external = ((body.get("spec") or {}).get("broker") or {}).get("external")
    if external or _resolves(host):
        return url
    meta = body["metadata"]
    ip = api.pod_ip(meta["namespace"], f"{naming.redis(meta['name'])}-0")
    if not ip:
        return url
    netloc = parts.netloc.replace(host, ip, 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def ping(url: str) -> None:
    """Refuse an unreachable broker with a one-line error saying how to reach it from outside."""
    connection = redis.Redis.from_url(url, socket_timeout=TIMEOUT_SECONDS, socket_connect_timeout=TIMEOUT_SECONDS)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise PluginError(
            f"cannot reach the broker at {where(url)}: {exc} (from outside the cluster: kubectl port-forward "
            "to it, then pass --broker-url)"
        ) from None
    finally:
        connection.close()


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
    url = override_url or reachable_url(api, body, broker_url(api, body))
    ping(url)
    steps = priority_steps(int(queues[queue].get("priorityLevels", 4)))
    app = producer.producer_app(url, priority_steps=steps)
    try:
        with app.producer_or_acquire() as sender:
            return [
                app.send_task(task, kwargs=kwargs, queue=queue, priority=priority, producer=sender).id
                for _ in range(count)
            ]
    finally:
        app.close()
