"""docs/runbooks/<Alert>.md from the alert definitions: what it means, how to confirm it, what to do, and
what not to do where a step that looks like a fix makes it worse."""

from __future__ import annotations

from jobqueue_monitoring import yaml_text
from jobqueue_monitoring.alerts import Alert

HEADER = "<!-- Generated from monitoring/jobqueue_monitoring/alerts.py by `make monitoring`: edit that file. -->"


def render(alert: Alert) -> str:
    rule = alert.rule()
    lines = [
        HEADER,
        f"# {alert.name}",
        "",
        f"**Severity:** {alert.severity}. **Fires:** "
        + (
            "as soon as the condition below holds."
            if alert.for_ == "0m"
            else f"after {alert.for_} of the condition below."
        ),
        "",
        alert.summary,
        "",
        "## What it means",
        "",
        alert.meaning,
        "",
        "## The rule",
        "",
        "```yaml",
        yaml_text.dump({k: rule[k] for k in ("alert", "expr", "for", "labels") if k in rule}).rstrip(),
        "```",
        "",
        "## How to confirm",
        "",
    ]
    for command in alert.confirm:
        language = "promql" if not command.startswith("kubectl") else "bash"
        lines += [f"```{language}", command, "```", ""]
    lines += ["## What to do", ""]
    lines += [f"- {action}" for action in alert.actions]
    if alert.avoid:
        lines += ["", "## What not to do", ""]
        lines += [f"- {step}" for step in alert.avoid]
    lines += ["", "Dashboards and the rest of the alerts: [docs/monitoring.md](../monitoring.md).", ""]
    return "\n".join(lines)
