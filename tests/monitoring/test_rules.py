"""The alert rules: generated file up to date, promtool check + unit tests (each alert fires and resolves,
with its runbook_url), pint clean, and the conventions every alert keeps."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from jobqueue_devenv import binaries
from jobqueue_monitoring import alerts, generate, links, queries

REPO = Path(__file__).resolve().parents[2]
TESTS = REPO / "monitoring" / "tests" / "alerts.test.yaml"


def test_generated_files_are_up_to_date() -> None:
    """The chart's dashboards and rules and docs/runbooks are `make monitoring`'s output."""
    assert generate.main(["--check"]) == 0, "run `make monitoring`"


def _rules() -> list[dict[str, object]]:
    return [rule for group in yaml.safe_load(generate.RULES_FILE.read_text())["groups"] for rule in group["rules"]]


def test_promtool_check_rules() -> None:
    done = subprocess.run(
        [str(binaries.tool("promtool")), "check", "rules", str(generate.RULES_FILE)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alerts.ALERTS)} rules found" in done.stdout


def test_promtool_unit_tests_fire_and_resolve_every_alert() -> None:
    done = subprocess.run(
        [str(binaries.tool("promtool")), "test", "rules", TESTS.name], capture_output=True, text=True, cwd=TESTS.parent
    )
    assert done.returncode == 0, done.stdout + done.stderr
    tests = yaml.safe_load(TESTS.read_text())["tests"]
    cases = [case for test in tests for case in test["alert_rule_test"]]
    for alert in alerts.ALERTS:
        mine = [case for case in cases if case["alertname"] == alert.name]
        fired = [a for case in mine for a in case["exp_alerts"]]
        assert fired, f"{alert.name}: no test case where it fires"
        assert any(not case["exp_alerts"] for case in mine), f"{alert.name}: no test case where it resolves"
        assert {a["exp_annotations"]["runbook_url"] for a in fired} == {links.runbook_url(alert.name)}


def test_pint_finds_no_problem() -> None:
    done = subprocess.run(
        [
            str(binaries.tool("pint")),
            "--no-color",
            "--offline",
            "lint",
            "--min-severity=info",
            str(generate.RULES_FILE),
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert done.returncode == 0, done.stderr
    assert "Problems found" not in done.stderr, done.stderr


def test_every_alert_keeps_the_conventions() -> None:
    for rule in _rules():
        name = str(rule["alert"])
        assert re.fullmatch(r"JobQueue[A-Z][A-Za-z]+", name)
        labels, annotations = rule["labels"], rule["annotations"]
        assert isinstance(labels, dict)
        assert isinstance(annotations, dict)
        assert labels["severity"] in ("critical", "warning", "info")
        assert {"summary", "description", "runbook_url"} <= set(annotations)
        assert "{{" not in annotations["summary"], f"{name}: the summary is a static sentence"
        if "dashboard_url" in annotations:  # an alert with labels says which JobQueue; an absent target has none
            assert "{{ $labels." in annotations["description"], f"{name}: the description is templated"
        assert annotations["runbook_url"] == links.runbook_url(name)
        assert (REPO / "docs" / "runbooks" / f"{name}.md").is_file()


def test_templates_use_only_labels_the_expression_keeps() -> None:
    """A description or dashboard link naming a label that `by (...)` dropped renders empty."""
    for alert in alerts.ALERTS:
        rule = alert.rule()
        used = set(re.findall(r"\$labels\.(\w+)", " ".join(rule["annotations"].values())))
        assert used <= set(alert.labels_in_scope), alert.name
        kept = set(re.findall(r"by \(([^)]*)\)", alert.expr)[0].replace(" ", "").split(",")) if used else set()
        assert used <= kept, alert.name


def test_there_is_no_plain_worker_down_alert() -> None:
    """Workers scale to zero on purpose: no alert may fire on ready workers alone."""
    for alert in alerts.ALERTS:
        assert 'kind="ready"' not in alert.expr, alert.name
        assert "jobqueue_worker_active_tasks" not in alert.expr, alert.name


def test_the_chart_default_runbook_base_is_the_generated_one() -> None:
    values = yaml.safe_load((REPO / "charts" / "jobqueue-operator" / "values.yaml").read_text())
    assert values["prometheusRule"]["runbookBaseUrl"] == links.RUNBOOK_BASE_URL


@pytest.mark.parametrize("query", queries.alert_queries(), ids=lambda q: q.source)
def test_alert_expressions_read_only_jobqueue_metrics_and_up(query: queries.Query) -> None:
    names = queries.metric_names(query.expr)
    assert names, query.expr
    assert all(n.startswith("jobqueue_") or n == "up" for n in names)
