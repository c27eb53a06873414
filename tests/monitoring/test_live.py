"""Every dashboard query and alert expression against a real Prometheus that scraped the real operator and
worker Pods through Kubernetes service discovery, with the relabelling of the chart's ServiceMonitor and
PodMonitor, after a burst of work (including failing tasks and a priority burst) through a JobQueue."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from jobqueue_devenv import binaries
from jobqueue_monitoring import alerts, picture, queries, scenario
from jobqueue_operator import naming

pytestmark = pytest.mark.cluster
REPO = Path(__file__).resolve().parents[2]
TARGET_LABELS = {"instance", "job", "namespace", "pod", "container", "endpoint", "service"}
"""Labels the monitors' relabelling adds to every scraped series."""


def _range(live: scenario.Live, expr: str) -> dict[str, Any]:
    return live.prometheus.query_range(expr, live.started - 30, live.ended + 2, 2)


def _targets(live: scenario.Live) -> list[dict[str, Any]]:
    return list(live.prometheus.api("targets", state="active")["data"]["activeTargets"])


def test_prometheus_scrapes_the_operator_and_every_worker_pod_through_service_discovery(live: scenario.Live) -> None:
    jobs = {job["job_name"] for job in live.scrape_configs}
    assert {j.split("/")[0] for j in jobs} == {"serviceMonitor", "podMonitor"}
    assert all(job["kubernetes_sd_configs"] for job in live.scrape_configs)
    # One target per operator Pod (the chart's two replicas): the leader, whose series the rest reads, and the
    # standby, which exports only its own histograms and jobqueue_operator_leader 0.
    operator = [t for t in _targets(live) if t["labels"]["job"] == alerts.OPERATOR_JOB]
    assert len(operator) == 2, operator
    assert all(target["health"] == "up" for target in operator), operator
    assert live.operator_metrics_url in {target["scrapeUrl"] for target in operator}
    # Every worker Pod that ran during the burst was scraped, under the job the PodMonitor sets.
    scraped = {
        s["metric"]["pod"]
        for s in _range(live, f'up{{job="jobqueue-worker", namespace="{live.namespace}"}} == 1')["data"]["result"]
    }
    assert live.worker_pods, "no worker Pod was seen running"
    assert live.worker_pods <= scraped, f"never scraped: {live.worker_pods - scraped}"


def test_series_carry_the_jobqueue_namespace_and_the_pod(live: scenario.Live) -> None:
    """The operator's own `namespace` label wins (honorLabels); workers get theirs from the Pod."""
    depth = live.prometheus.query(f'jobqueue_queue_depth{{namespace="{live.namespace}"}}')["data"]["result"]
    assert depth
    assert {s["metric"]["job"] for s in depth} == {alerts.OPERATOR_JOB}
    tasks = _range(live, f'jobqueue_worker_tasks_total{{namespace="{live.namespace}"}}')["data"]["result"]
    assert tasks
    assert all(s["metric"]["pod"].startswith(f"{scenario.JOBQUEUE}-") for s in tasks)
    assert {s["metric"]["job"] for s in tasks} == {"jobqueue-worker"}


PANELS = [q for q in queries.dashboard_queries() if q.kind in ("panel", "annotation")]


@pytest.mark.parametrize("query", PANELS, ids=lambda q: getattr(q, "source", None))
def test_every_dashboard_query_returns_data(live: scenario.Live, query: queries.Query) -> None:
    if queries.metric_names(query.expr) <= _sentinel_only():  # temporary, as in the metrics table test below
        pytest.skip("reads only series of a Sentinel broker; the scenario's broker is a plain Redis so far")
    expr = queries.expand(query.expr, live.namespace, scenario.JOBQUEUE)
    reply = _range(live, expr)
    assert reply["status"] == "success", f"{query.source}: {reply.get('error')}\n{expr}"
    assert reply["data"]["result"], f"{query.source}: no data\n{expr}"


@pytest.mark.parametrize(
    "query", [q for q in queries.dashboard_queries() if q.kind == "variable"], ids=lambda q: q.source
)
def test_every_variable_lists_the_jobqueue(live: scenario.Live, query: queries.Query) -> None:
    parsed = queries.label_values(query.expr)
    assert parsed is not None, query.expr
    selector, label = parsed
    reply = live.prometheus.api(
        f"label/{label}/values", **{"match[]": queries.expand(selector, live.namespace, scenario.JOBQUEUE)}
    )
    expected = {"namespace": live.namespace, "jobqueue": scenario.JOBQUEUE, "queue": scenario.BURST_QUEUE}[label]
    assert expected in reply["data"], reply


@pytest.mark.parametrize("query", queries.alert_queries(), ids=lambda q: q.source)
def test_every_alert_expression_evaluates(live: scenario.Live, query: queries.Query) -> None:
    reply = live.prometheus.query(query.expr)
    assert reply["status"] == "success", f"{query.source}: {reply.get('error')}"


def test_prometheus_evaluates_every_rule_of_the_chart_without_error(live: scenario.Live) -> None:
    groups = live.prometheus.api("rules", type="alert")["data"]["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == {alert.name for alert in alerts.ALERTS}
    broken = {name: rule.get("lastError") for name, rule in rules.items() if rule["health"] != "ok"}
    assert broken == {}


def _exported(live: scenario.Live) -> set[str]:
    """Metric names scraped from the operator and worker targets during the scenario."""
    selector = f'{{job=~"{alerts.OPERATOR_JOB}|jobqueue-worker"}}'
    reply = live.prometheus.api(
        "label/__name__/values", **{"match[]": selector, "start": live.started - 60, "end": live.ended + 2}
    )
    return set(reply["data"])


def test_every_metric_a_dashboard_or_rule_uses_is_really_exported(live: scenario.Live) -> None:
    exported = _exported(live) | {"up"}
    used = {name for query in queries.all_queries() for name in queries.metric_names(query.expr)}
    # Temporary, as in the metrics table test below: a Sentinel broker's series need one in the scenario.
    assert used - exported - _sentinel_only() == set()


SENTINEL_ONLY = "operator, Sentinel brokers only:"
"""How docs/metrics.md starts the meaning of a series exported only for a broker reached through Sentinel."""


def _sentinel_only() -> set[str]:
    lines = (REPO / "docs" / "metrics.md").read_text().splitlines()
    return {line.split("`")[1] for line in lines if line.startswith("| `jobqueue_") and SENTINEL_ONLY in line}


def _metrics_table() -> dict[str, tuple[str, set[str]]]:
    """docs/metrics.md: name -> (type, labels)."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in (REPO / "docs" / "metrics.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) >= 4 and cells[0].startswith("`jobqueue_"):
            labels = set(re.findall(r"`(\w+)`", cells[2]))
            rows[cells[0].strip("`")] = (cells[1], labels)
    return rows


def test_the_metrics_table_matches_what_is_exported(live: scenario.Live) -> None:
    table = _metrics_table()
    metadata = {**live.metadata, **{n: e[0]["type"] for n, e in live.prometheus.api("metadata")["data"].items()}}
    families = {}
    for name, kind in metadata.items():
        if name.startswith("jobqueue_") and not name.endswith("_created"):
            families[f"{name}_total" if kind == "counter" and not name.endswith("_total") else name] = kind
    # Series of a Sentinel-managed broker exist only with one; the scenario's broker is a plain Redis so far.
    table = {name: row for name, row in table.items() if name in families or name not in _sentinel_only()}
    assert set(table) == set(families), "docs/metrics.md and the scraped metric families differ"
    for name, (kind, labels) in table.items():
        assert kind == families[name], name
        suffix = "_bucket" if kind == "histogram" else ""  # counters are named with _total already
        series = live.prometheus.api(
            "series", **{"match[]": f"{name}{suffix}", "start": live.started - 60, "end": live.ended + 2}
        )["data"]
        seen = {label for s in series for label in s} - {"__name__", "le"} - TARGET_LABELS
        documented = labels - TARGET_LABELS
        assert seen == documented, f"{name}: exported {sorted(seen)}, documented {sorted(documented)}"


@pytest.mark.parametrize("which", ["operator", "worker"])
def test_promtool_check_metrics_is_clean(live: scenario.Live, which: str) -> None:
    if which == "operator":
        url = live.operator_metrics_url
    else:
        # The steady queue's worker: a burst worker's target may still read "up" after its Pod scaled away.
        steady = live.kube.get("pods", "-n", live.namespace, "-l", f"{naming.QUEUE_LABEL}={scenario.STEADY_QUEUE}")[
            "items"
        ]
        names = {pod["metadata"]["name"] for pod in steady if "deletionTimestamp" not in pod["metadata"]}
        workers = [
            t
            for t in _targets(live)
            if t["labels"]["job"] == "jobqueue-worker" and t["health"] == "up" and t["labels"].get("pod") in names
        ]
        assert workers, "no worker Pod of the steady queue is scraped now (it keeps one)"
        url = workers[0]["scrapeUrl"]
    text = scenario.scrape_text(url)
    done = subprocess.run(
        [str(binaries.tool("promtool")), "check", "metrics"], input=text, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_per_queue_dashboard_picture_is_drawn_from_this_prometheus(live: scenario.Live, tmp_path: Path) -> None:
    out = tmp_path / "queue-dashboard.png"
    drawn = picture.draw(live, out)
    assert out.stat().st_size > 20_000
    assert drawn == picture.PANELS  # every panel of the picture had data
