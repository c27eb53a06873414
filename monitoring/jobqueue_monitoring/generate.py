"""Write (or check) every generated monitoring file: the chart's dashboards and rule file, the runbooks.

python -m jobqueue_monitoring           # regenerate (make monitoring)
python -m jobqueue_monitoring --check   # exit 1 and name the files that differ (the tests run this)
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Final

from jobqueue_monitoring import alerts, runbooks, yaml_text
from jobqueue_monitoring.dashboards import DASHBOARDS
from jobqueue_monitoring.dashboards.common import to_json

REPO: Final = Path(__file__).resolve().parents[2]
CHART_FILES: Final = REPO / "charts" / "jobqueue-operator" / "files"
DASHBOARD_DIR: Final = CHART_FILES / "dashboards"
RULES_FILE: Final = CHART_FILES / "prometheus_alerts.yaml"
RUNBOOK_DIR: Final = REPO / "docs" / "runbooks"
RULES_HEADER: Final = (
    "# Generated from monitoring/jobqueue_monitoring/alerts.py by `make monitoring`: edit that file.\n"
    "# A Prometheus rule file; the chart wraps it in a PrometheusRule (prometheusRule.enabled).\n"
)


def rules_text() -> str:
    return RULES_HEADER + yaml_text.dump(alerts.rule_groups())


def outputs() -> dict[Path, str]:
    """Every generated file and its content."""
    files = {DASHBOARD_DIR / f"{uid}.json": to_json(build()) for uid, build in DASHBOARDS.items()}
    files[RULES_FILE] = rules_text()
    for alert in alerts.ALERTS:
        files[RUNBOOK_DIR / f"{alert.name}.md"] = runbooks.render(alert)
    return files


def stale(files: dict[Path, str]) -> list[Path]:
    """Generated files whose content differs, and files in the generated folders nobody generates."""
    differ = [path for path, text in files.items() if not path.exists() or path.read_text() != text]
    known = set(files)
    extra = [
        path
        for folder, pattern in ((DASHBOARD_DIR, "*.json"), (RUNBOOK_DIR, "*.md"))
        for path in sorted(folder.glob(pattern))
        if path not in known
    ]
    return differ + extra


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m jobqueue_monitoring", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 when a file is out of date")
    args = parser.parse_args(argv)
    files = outputs()
    if args.check:
        out_of_date = stale(files)
        for path in out_of_date:
            print(f"out of date: {path.relative_to(REPO)} (run `make monitoring`)", file=sys.stderr)
        return 1 if out_of_date else 0
    for path in stale(files):
        if path not in files:
            path.unlink()
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists() or path.read_text() != text:
            path.write_text(text)
            print(f"wrote {path.relative_to(REPO)}")
    return 0
