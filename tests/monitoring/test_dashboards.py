"""The generated dashboards: stable uids, the variables, and every panel with a description, a unit and
queries on the datasource variable."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_monitoring import links, queries

BOARDS = queries.dashboards()


def _panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    return [p for p in board["panels"] if p["type"] != "row"]


def test_the_dashboards_and_their_stable_uids() -> None:
    assert set(BOARDS) == {links.OVERVIEW_UID, links.QUEUE_UID}
    for uid, board in BOARDS.items():
        assert board["uid"] == uid
        assert board["title"].startswith("JobQueue / ")
        assert board["schemaVersion"] >= 39


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_variables_datasource_namespace_jobqueue_queue_multi_with_all(uid: str) -> None:
    variables = {v["name"]: v for v in BOARDS[uid]["templating"]["list"]}
    assert list(variables) == ["datasource", "namespace", "jobqueue", "queue"]
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "jobqueue", "queue"):
        assert variables[name]["multi"] is True
        assert variables[name]["includeAll"] is True
        assert variables[name]["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("uid", sorted(BOARDS))
def test_every_panel_has_a_description_a_unit_and_queries_on_the_chosen_datasource(uid: str) -> None:
    panels = _panels(BOARDS[uid])
    assert panels
    ids = [p["id"] for p in BOARDS[uid]["panels"]]
    assert len(ids) == len(set(ids))
    for panel in panels:
        assert len(panel.get("description", "")) > 20, panel["title"]
        assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}"


@pytest.mark.parametrize("query", queries.dashboard_queries(), ids=lambda q: q.source)
def test_every_panel_query_applies_the_variables(query: queries.Query) -> None:
    """A query that ignores $namespace / $jobqueue would show other JobQueues' data."""
    if query.kind == "variable" or "jobqueue_reconcile" in query.expr or "jobqueue_autoscaler_tick" in query.expr:
        return  # variables narrow each other; the operator's own histograms are not per JobQueue
    if query.expr.startswith("max(up{"):
        return
    assert '"$namespace"' in query.expr, query.expr
    assert '"$jobqueue"' in query.expr, query.expr


def test_the_per_queue_dashboard_has_the_panels_users_asked_for() -> None:
    titles = {p["title"] for p in _panels(BOARDS[links.QUEUE_UID])}
    assert {
        "Waiting and in-flight tasks",
        "Waiting tasks by priority",
        "Oldest waiting task",
        "Workers: desired, current, ready",
        "Scaling decisions by reason",
        "Task run time (p50 / p95 / p99)",
        "Queue wait (p50 / p95 / p99)",
        "Failures by task",
        "Pool child recycles",
        "Worker memory",
        "Dead letters",
    } <= titles
    annotations = [a["name"] for a in BOARDS[links.QUEUE_UID]["annotations"]["list"]]
    assert "Scaling decisions" in annotations
