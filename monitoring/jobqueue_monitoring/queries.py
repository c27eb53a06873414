"""Every PromQL expression the shipped monitoring runs, read from the generated files themselves (the
dashboards' panel targets, annotations and variables; the rule file's alerts), and what Grafana would put
in place of the dashboard variables, so each can be evaluated against a real Prometheus."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import yaml

from jobqueue_monitoring.generate import DASHBOARD_DIR, RULES_FILE

METRIC: Final = re.compile(r"\b(jobqueue_[a-z0-9_]+|up)\b(?!\s*(=|!=|=~|!~)[^=])")
"""A metric name in PromQL: jobqueue_* or `up`, not followed by a label matcher's operator."""
LABEL_VALUES: Final = re.compile(r"^label_values\((?P<match>.*),\s*(?P<label>\w+)\)$")


@dataclass(frozen=True)
class Query:
    source: str
    """Where it comes from: `<dashboard uid> / <panel title> / <refId>` or `alert <name>`."""
    expr: str
    kind: str
    """"panel", "annotation", "variable" or "alert"."""
    instant: bool = False


def _panels(board: dict[str, Any]) -> Iterator[dict[str, Any]]:
    for panel in board.get("panels") or []:
        yield panel
        yield from panel.get("panels") or []


def dashboards() -> dict[str, dict[str, Any]]:
    return {path.stem: json.loads(path.read_text()) for path in sorted(DASHBOARD_DIR.glob("*.json"))}


def dashboard_queries() -> list[Query]:
    found: list[Query] = []
    for uid, board in dashboards().items():
        for panel in _panels(board):
            for target in panel.get("targets") or []:
                found.append(
                    Query(
                        f"{uid} / {panel['title']} / {target['refId']}",
                        target["expr"],
                        "panel",
                        bool(target.get("instant")),
                    )
                )
        for annotation in (board.get("annotations") or {}).get("list") or []:
            if annotation.get("expr"):
                found.append(Query(f"{uid} / annotation {annotation['name']}", annotation["expr"], "annotation"))
        for variable in (board.get("templating") or {}).get("list") or []:
            if variable.get("type") == "query":
                found.append(Query(f"{uid} / variable {variable['name']}", variable["query"]["query"], "variable"))
    return found


def alert_queries() -> list[Query]:
    rules = yaml.safe_load(RULES_FILE.read_text())
    return [
        Query(f"alert {rule['alert']}", rule["expr"], "alert") for group in rules["groups"] for rule in group["rules"]
    ]


def all_queries() -> list[Query]:
    return dashboard_queries() + alert_queries()


def expand(expr: str, namespace: str, jobqueue: str, rate_interval: str = "20s", queue: str = ".*") -> str:
    """`expr` with the dashboard variables replaced as Grafana does for one namespace and JobQueue, the
    queue (default All, `.*`) and the given $__rate_interval."""
    values = {
        "$namespace": namespace,
        "$jobqueue": jobqueue,
        "$queue": queue,
        "$__rate_interval": rate_interval,
        "$__interval": "2s",
    }
    for name, value in values.items():
        expr = expr.replace(name, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names an expression reads (label names and values are not metric names)."""
    without_strings = re.sub(r'"[^"]*"', '""', expr)
    return {match.group(1) for match in METRIC.finditer(without_strings)}


def label_values(expr: str) -> tuple[str, str] | None:
    """(series selector, label) of a `label_values(selector, label)` variable query."""
    match = LABEL_VALUES.match(expr.strip())
    return (match.group("match"), match.group("label")) if match else None
