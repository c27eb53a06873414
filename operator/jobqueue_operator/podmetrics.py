"""The only module that reads worker Pods' own /metrics: how many tasks each one runs now.

Read right before a scale-down, so the idle Pods can be marked for removal first (pod-deletion-cost).
The scrapes of one queue's Pods go out together, each bounded by a short timeout: an unreachable Pod
costs at most that timeout, and counts as fully busy (it is spared rather than guessed idle).
"""

from __future__ import annotations

import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Final

from prometheus_client.parser import text_string_to_metric_families

from jobqueue_worker import contract

SCRAPE_TIMEOUT_SECONDS: Final = 1.0
PARALLEL_SCRAPES: Final = 16


def busy_slots(metrics_text: str) -> int:
    """Tasks a worker Pod is running now, from its /metrics (PURE)."""
    return int(
        sum(
            sample.value
            for family in text_string_to_metric_families(metrics_text)
            if family.name == contract.ACTIVE_TASKS_METRIC
            for sample in family.samples
        )
    )


def _scrape(pod: Mapping[str, Any], concurrency: int) -> int:
    ip = (pod.get("status") or {}).get("podIP")
    if not ip:
        return concurrency
    url = f"http://{ip}:{contract.METRICS_PORT}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_TIMEOUT_SECONDS) as reply:
            return busy_slots(reply.read().decode())
    except (OSError, ValueError):
        return concurrency


def busy(pods: Sequence[Mapping[str, Any]], concurrency: int) -> dict[str, int]:
    """Pod name -> tasks it runs now; a Pod that does not answer counts as running `concurrency` tasks."""
    if not pods:
        return {}
    with ThreadPoolExecutor(min(len(pods), PARALLEL_SCRAPES), thread_name_prefix="scrape") as pool:
        counts = list(pool.map(lambda pod: _scrape(pod, concurrency), pods))
    return {pod["metadata"]["name"]: count for pod, count in zip(pods, counts, strict=True)}
