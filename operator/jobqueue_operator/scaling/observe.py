"""Every read of one autoscaler tick: the broker (one pipeline for every queue's depth, then the worker
incarnations registered in it, the queues outside the spec that hold tasks and its memory), the worker
Deployments and Pods, the nodes of those Pods (shared by every JobQueue: `node_reads`), and the queues'
Prometheus sources (sent together, each bounded by its own timeout)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from jobqueue_operator import broker, broker_admin, broker_sentinel, kube, naming, nodes, promquery, redelivery
from jobqueue_operator.broker_replication import Members
from jobqueue_operator.build import redis
from jobqueue_operator.build.common import Manifest, broker_url_ref
from jobqueue_operator.build.workers import live_priority_steps
from jobqueue_operator.models import JobQueue
from jobqueue_operator.node_reads import NodeReads
from jobqueue_operator.scaling.decide import Seen
from jobqueue_worker.contract import priority_steps

URL_REFRESH_SECONDS: Final = 60.0
"""How long the broker URL read from its Secret is reused before it is read again."""
PARALLEL_QUERIES: Final = 8


@dataclass
class UrlCache:
    """The broker URL of one JobQueue, read from its Secret at most once a minute; a failed read of the
    broker drops it, so the next tick reads the Secret again (it may have been the cause)."""

    url: str | None = None
    read_at: float = float("-inf")


def _broker_url(client: kube.KubeApi, jq: JobQueue, cache: UrlCache, now: float) -> str:
    """The URL to read the broker with: an external broker's from its Secret; for a managed one the
    operator's own user's (a user's edit of the broker's Secret cannot break it), else, for a Redis started
    before that user existed, the Secret's (whichever Redis accepts: one PING each, on a refresh only)."""
    if cache.url is not None and now - cache.read_at < URL_REFRESH_SECONDS:
        return cache.url
    name, key = broker_url_ref(jq)
    url = kube.secret_value(client, jq.namespace, name, key)
    own = (
        kube.secret_value(client, jq.namespace, naming.redis_operator_secret(jq.name), naming.PASSWORD_KEY)
        if jq.spec.broker.managed is not None
        else None
    )
    # A refused mode switch (reconcile/broker_mode.py): the broker runs in the other mode than the spec asks,
    # and the Secret's url, kept in the mode that runs, is the way in.
    refused = url is not None and broker.is_sentinel(url) != redis.high_availability(jq)
    if own and not refused:
        url, _ = broker_admin.login([(redis.operator_url(jq, own), True), *([(url, False)] if url else [])])
    if url is None:
        raise broker.BrokerError(f"Secret {name} with key {key} does not exist or is not a URL")
    cache.url, cache.read_at = url, now
    return url


@dataclass(frozen=True)
class BrokerView:
    counts: Mapping[str, broker.QueueCounts]
    error: str | None = None
    incarnations: Sequence[redelivery.Seen] | None = None
    """None: not read (the broker could not be read, or failed after the depths)."""
    unserved: Mapping[str, int] | None = None
    memory: tuple[int, int] | None = None
    members: Members | None = None
    """A Sentinel-managed broker's members (None: a redis:// broker, or its URL was not read)."""


def _members(url: str) -> Members | None:
    """The members of a sentinel:// broker (read whether or not its master answers: they say why not). The
    master name is `contract.SENTINEL_MASTER_NAME` (broker.client_for's default) for every broker so far."""
    return broker_sentinel.read(url) if broker.is_sentinel(url) else None


def _incarnations(url: str, queues: Collection[str]) -> list[redelivery.Seen]:
    return [
        redelivery.Seen(
            instance=found.registration.instance,
            queue=found.registration.queue,
            pod=found.registration.pod,
            pod_uid=found.registration.pod_uid,
            namespace=found.registration.namespace,
            started_at=found.registration.started_at,
            alive=found.alive,
            held=found.held,
            result_backend_problem=found.result_backend_problem,
        )
        for found in broker.list_incarnations(url, queues=queues)
    ]


def _broker(
    client: kube.KubeApi, jq: JobQueue, cache: UrlCache, draining: Collection[str], deployments: Mapping[str, Manifest]
) -> BrokerView:
    keys = [broker.QueueKeys(q.name, tuple(priority_steps(q.priority_levels))) for q in jq.spec.queues]
    listed = {key.name for key in keys}
    keys += [  # a queue that left the spec is read with the priority steps its workers still use
        broker.QueueKeys(name, tuple(live_priority_steps(deployments[name])))
        for name in sorted(set(draining) - listed)
        if name in deployments
    ]
    members = None
    try:
        url = _broker_url(client, jq, cache, time.monotonic())
        members = _members(url)
        counts = broker.read_counts(url, keys)
    except (broker.BrokerError, kube.KubeError) as exc:
        cache.url = None  # read the Secret again next time: it may have been the cause
        return BrokerView({}, str(exc), members=members)
    queues = {key.name for key in keys} | set(draining)
    try:
        incarnations = _incarnations(url, queues)
        unserved = broker.unserved_queues(url, queues).waiting
        memory = broker.memory_usage(url)
    except broker.BrokerError:  # the depths were read: scale on them; the rest waits for the next tick
        return BrokerView(counts, members=members)
    return BrokerView(counts, None, incarnations, unserved, memory, members)


def _query(source: tuple[str, str, int]) -> tuple[float | None, str | None]:
    address, query, timeout = source
    try:
        return promquery.instant_query(address, query, timeout), None
    except promquery.QueryError as exc:
        return None, str(exc)


def _queries(jq: JobQueue, deployments: Mapping[str, Manifest]) -> dict[str, tuple[float | None, str | None]]:
    sources = {
        q.name: (
            q.autoscaling.prometheus.server_address,
            q.autoscaling.prometheus.query,
            q.autoscaling.prometheus.timeout_seconds,
        )
        for q in jq.spec.queues
        if q.autoscaled and q.autoscaling is not None and q.autoscaling.prometheus is not None and q.name in deployments
    }
    if not sources:
        return {}
    with ThreadPoolExecutor(min(len(sources), PARALLEL_QUERIES), thread_name_prefix="promql") as pool:
        answers = list(pool.map(_query, sources.values()))
    return dict(zip(sources, answers, strict=True))


def read(
    client: kube.KubeApi,
    jq: JobQueue,
    cache: UrlCache,
    draining: Collection[str] = (),
    with_pods: bool = False,
    node_reads: NodeReads | None = None,
) -> Seen:
    """Everything one tick of `jq` reads; `draining`: queues left the spec whose workers still drain them
    (their depths are read too, for the backlog);
    `with_pods`: read the worker Pods even when no worker's heartbeat lapsed (to learn their start-up).
    The worker Pods are read too for a while after a node was found gone (a Pod of ours may be bound to
    it), and the nodes (`node_reads`, shared) whenever the Pods read are bound to nodes."""
    deployments = client.worker_deployments(jq.namespace, jq.name)
    seen = _broker(client, jq, cache, draining, deployments)
    selector = f"{naming.children_selector(jq.name)},{naming.COMPONENT_LABEL}={naming.WORKER}"
    incarnations = seen.incarnations or ()
    lapsed = any(not incarnation.alive for incarnation in incarnations)  # only then can one be dead
    node_lost = node_reads is not None and node_reads.recently_lost()
    wanted = lapsed or with_pods or node_lost
    pods = {pod["metadata"]["name"]: pod for pod in client.pods(jq.namespace, selector)} if wanted else {}
    snapshot = None
    if node_reads is not None and any(nodes.node_of(pod) for pod in pods.values()):
        snapshot = node_reads.snapshot()
    return Seen(
        jq,
        time.time(),
        seen.counts,
        seen.error,
        deployments,
        _queries(jq, deployments),
        incarnations=incarnations,
        worker_pods=pods,
        unserved=seen.unserved,
        memory=seen.memory,
        node_view=snapshot,
        registry_read=seen.incarnations is not None,
        members=seen.members,
    )
