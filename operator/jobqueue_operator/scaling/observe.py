"""Every read of one autoscaler tick: the broker (one pipeline for every queue's depth, then the worker
incarnations registered in it, the queues outside the spec that hold tasks and its memory), the worker
Deployments and Pods, and the queues' Prometheus sources (sent together, each bounded by its own timeout)."""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from jobqueue_operator import broker, kube, naming, promquery, redelivery
from jobqueue_operator.build.common import Manifest, broker_url_ref
from jobqueue_operator.models import JobQueue
from jobqueue_operator.scaling.decide import Seen
from jobqueue_worker.contract import priority_steps

URL_REFRESH_SECONDS: Final = 60.0
"""How long the broker URL read from its Secret is reused before it is read again."""
PARALLEL_QUERIES: Final = 8


@dataclass
class UrlCache:
    """The broker URL of one JobQueue, read from its Secret at most once a minute."""

    url: str | None = None
    read_at: float = float("-inf")


def _broker_url(client: kube.KubeApi, jq: JobQueue, cache: UrlCache, now: float) -> str:
    if cache.url is not None and now - cache.read_at < URL_REFRESH_SECONDS:
        return cache.url
    name, key = broker_url_ref(jq)
    url = kube.secret_value(client, jq.namespace, name, key)
    if url is None:
        raise broker.BrokerError(f"Secret {name} with key {key} does not exist or is not a URL")
    cache.url, cache.read_at = url, now
    return url


@dataclass(frozen=True)
class BrokerView:
    counts: Mapping[str, broker.QueueCounts]
    error: str | None = None
    incarnations: Sequence[redelivery.Seen] = ()
    unserved: Mapping[str, int] | None = None
    memory: tuple[int, int] | None = None


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
        )
        for found in broker.list_incarnations(url, queues=queues)
    ]


def _broker(client: kube.KubeApi, jq: JobQueue, cache: UrlCache, draining: Collection[str]) -> BrokerView:
    keys = [broker.QueueKeys(q.name, tuple(priority_steps(q.priority_levels))) for q in jq.spec.queues]
    try:
        url = _broker_url(client, jq, cache, time.monotonic())
        counts = broker.read_counts(url, keys)
    except (broker.BrokerError, kube.KubeError) as exc:
        cache.url = None  # read the Secret again next time: it may have been the cause
        return BrokerView({}, str(exc))
    queues = {key.name for key in keys} | set(draining)
    try:
        incarnations = _incarnations(url, queues)
        unserved = broker.unserved_queues(url, queues).waiting
        memory = broker.memory_usage(url)
    except broker.BrokerError:  # the depths were read: scale on them; the rest waits for the next tick
        return BrokerView(counts)
    return BrokerView(counts, None, incarnations, unserved, memory)


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
    client: kube.KubeApi, jq: JobQueue, cache: UrlCache, draining: Collection[str] = (), with_pods: bool = False
) -> Seen:
    """Everything one tick of `jq` reads; `draining`: queues left the spec whose workers still drain them;
    `with_pods`: read the worker Pods even when no worker's heartbeat lapsed (to learn their start-up)."""
    seen = _broker(client, jq, cache, draining)
    deployments = client.worker_deployments(jq.namespace, jq.name)
    selector = f"{naming.children_selector(jq.name)},{naming.COMPONENT_LABEL}={naming.WORKER}"
    lapsed = any(not incarnation.alive for incarnation in seen.incarnations)  # only then can one be dead
    wanted = lapsed or with_pods
    pods = {pod["metadata"]["name"]: pod for pod in client.pods(jq.namespace, selector)} if wanted else {}
    return Seen(
        jq,
        time.time(),
        seen.counts,
        seen.error,
        deployments,
        _queries(jq, deployments),
        incarnations=seen.incarnations,
        worker_pods=pods,
        unserved=seen.unserved,
        memory=seen.memory,
    )
