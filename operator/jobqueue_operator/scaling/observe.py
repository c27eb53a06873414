"""Every read of one autoscaler tick: the broker (one pipeline for every queue), the worker Deployments,
and the queues' Prometheus sources (sent together, each bounded by its own timeout)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Final

from jobqueue_operator import broker, kube, promquery
from jobqueue_operator.build.common import broker_url_ref
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


def _counts(client: kube.KubeApi, jq: JobQueue, cache: UrlCache) -> tuple[Mapping[str, broker.QueueCounts], str | None]:
    keys = [broker.QueueKeys(q.name, tuple(priority_steps(q.priority_levels))) for q in jq.spec.queues]
    try:
        return broker.read_counts(_broker_url(client, jq, cache, time.monotonic()), keys), None
    except (broker.BrokerError, kube.KubeError) as exc:
        cache.url = None  # read the Secret again next time: it may have been the cause
        return {}, str(exc)


def _query(source: tuple[str, str, int]) -> tuple[float | None, str | None]:
    address, query, timeout = source
    try:
        return promquery.instant_query(address, query, timeout), None
    except promquery.QueryError as exc:
        return None, str(exc)


def _queries(jq: JobQueue, deployments: Mapping[str, kube.Manifest]) -> dict[str, tuple[float | None, str | None]]:
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


def read(client: kube.KubeApi, jq: JobQueue, cache: UrlCache) -> Seen:
    """Everything one tick of `jq` reads."""
    counts, error = _counts(client, jq, cache)
    deployments = client.worker_deployments(jq.namespace, jq.name)
    return Seen(jq, time.time(), counts, error, deployments, _queries(jq, deployments))
