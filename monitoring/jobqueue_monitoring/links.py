"""Where alerts point: the runbooks and the dashboards (one place for every URL the rules carry)."""

from __future__ import annotations

from typing import Final

RUNBOOK_BASE_URL: Final = "https://github.com/jobqueue-dev/jobqueue-operator/blob/main/docs/runbooks"
"""Default base of `runbook_url`; the chart's `prometheusRule.runbookBaseUrl` replaces it."""

OVERVIEW_UID: Final = "jobqueue-overview"
QUEUE_UID: Final = "jobqueue-queue"
DASHBOARD_SLUGS: Final = {OVERVIEW_UID: "jobqueue-overview", QUEUE_UID: "jobqueue-queue"}


def runbook_url(alert: str, base: str = RUNBOOK_BASE_URL) -> str:
    return f"{base.rstrip('/')}/{alert}.md"


def dashboard_path(uid: str, variables: tuple[str, ...]) -> str:
    """A Grafana path (no host: the chart's `prometheusRule.grafanaUrl` is put in front) opening the
    dashboard on the alert's own namespace, JobQueue and queue."""
    query = "&".join(f"var-{name}={{{{ $labels.{name} }}}}" for name in variables)
    return f"/d/{uid}/{DASHBOARD_SLUGS[uid]}?{query}"
