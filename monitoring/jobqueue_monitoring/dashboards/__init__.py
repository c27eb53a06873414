"""The Grafana dashboards, built with grafana-foundation-sdk: uid -> builder."""

from __future__ import annotations

from collections.abc import Callable
from typing import Final

from grafana_foundation_sdk.builders.dashboard import Dashboard

from jobqueue_monitoring import links
from jobqueue_monitoring.dashboards import overview, queue

DASHBOARDS: Final[dict[str, Callable[[], Dashboard]]] = {
    links.OVERVIEW_UID: overview.build,
    links.QUEUE_UID: queue.build,
}
