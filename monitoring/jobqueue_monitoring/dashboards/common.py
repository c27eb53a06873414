"""Pieces both dashboards share: the datasource and the namespace / jobqueue / queue variables, and
panel builders that always set a description and a unit (a panel without either is refused).

Selectors: every query filters on `SELECTOR` (or `JOBQUEUE_SELECTOR` for series without a queue), so the
variables apply to every panel the same way.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard, prometheus, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as models
from grafana_foundation_sdk.models import prometheus as prometheus_models

DATASOURCE: Final = models.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOBQUEUE_SELECTOR: Final = 'namespace=~"$namespace", jobqueue=~"$jobqueue"'
SELECTOR: Final = f'{JOBQUEUE_SELECTOR}, queue=~"$queue"'
RATE: Final = "$__rate_interval"
TAGS: Final = ["jobqueue", "celery"]


def increments(selector: str, window: str, by: str) -> str:
    """Increments of a counter per `by` over `window`, counting a series that first appeared in the window
    too (its first value is its increment: `increase` alone needs two samples and misses it)."""
    return (
        f"sum by ({by}) (\n  increase({selector}[{window}])\n  or\n  ({selector} unless {selector} offset {window})\n)"
    )


def _variable(name: str, label: str, query: str, description: str) -> dashboard.QueryVariable:
    return (
        dashboard.QueryVariable(name)
        .label(label)
        .description(description)
        .datasource(DATASOURCE)
        .query({"query": query, "refId": f"{name}-values"})
        .refresh(models.VariableRefresh.ON_TIME_RANGE_CHANGED)
        .sort(models.VariableSort.ALPHABETICAL_ASC)
        .multi(True)
        .include_all(True)
        .all_value(".*")
    )


def variables() -> list[Any]:
    """datasource, then namespace, jobqueue and queue (each multi-value with All), each narrowing the next."""
    datasource = (
        dashboard.DatasourceVariable("datasource")
        .label("Data source")
        .description("The Prometheus that scrapes the jobqueue-operator and its workers.")
        .type("prometheus")
    )
    return [
        datasource,
        _variable(
            "namespace",
            "Namespace",
            "label_values(jobqueue_workers, namespace)",
            "Namespaces that hold JobQueues.",
        ),
        _variable(
            "jobqueue",
            "JobQueue",
            'label_values(jobqueue_workers{namespace=~"$namespace"}, jobqueue)',
            "JobQueues in the chosen namespaces.",
        ),
        _variable(
            "queue",
            "Queue",
            f"label_values(jobqueue_workers{{{JOBQUEUE_SELECTOR}}}, queue)",
            "Queues of the chosen JobQueues.",
        ),
    ]


def query(expr: str, legend: str = "__auto", ref: str = "A", instant: bool = False) -> prometheus.Dataquery:
    built = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    return built.instant().format(prometheus_models.PromQueryFormat.TABLE) if instant else built.range()


def _targets(exprs: Sequence[tuple[str, str]]) -> list[Any]:
    """Panel targets (the SDK's `targets` wants builders of the generic Dataquery: `Any` says so)."""
    return [query(expr, legend, chr(ord("A") + i)) for i, (expr, legend) in enumerate(exprs)]


def series(
    title: str,
    description: str,
    unit: str,
    exprs: Sequence[tuple[str, str]],
    *,
    width: int = 12,
    height: int = 8,
    stacked: bool = False,
    bars: bool = False,
    dashed: Sequence[str] = (),
    minimum: float | None = 0,
) -> timeseries.Panel:
    """A time series panel of (expr, legend) pairs; `dashed` names legends (regexes) drawn as dashed
    lines without fill (targets and limits)."""
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets(exprs))
        .span(width)
        .height(height)
        .fill_opacity(10 if not bars else 80)
        .line_width(1)
        .legend(
            common_builders.VizLegendOptions()
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
            .show_legend(True)
        )
        .tooltip(
            common_builders.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI).sort(common.SortOrder.DESCENDING)
        )
    )
    if minimum is not None:
        panel = panel.min(minimum)
    if stacked:
        panel = panel.stacking(common_builders.StackingConfig().mode(common.StackingMode.NORMAL))
    if bars:
        panel = panel.draw_style(common.GraphDrawStyle.BARS)
    for legend in dashed:
        panel = panel.override_by_regexp(
            legend,
            [
                models.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]}),
                models.DynamicConfigValue(id_val="custom.fillOpacity", value=0),
                models.DynamicConfigValue(id_val="custom.stacking", value={"mode": "none"}),
                models.DynamicConfigValue(id_val="custom.lineWidth", value=2),
            ],
        )
    return panel


def single_stat(
    title: str,
    description: str,
    unit: str,
    expr: str,
    *,
    thresholds: Sequence[tuple[float | None, str]] = ((None, "green"),),
    width: int = 4,
) -> stat.Panel:
    steps = [models.Threshold(value=value, color=color) for value, color in thresholds]
    return (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .targets(_targets([(expr, "__auto")]))
        .span(width)
        .height(4)
        .thresholds(dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps))
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
        .reduce_options(common_builders.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )


def timeline(title: str, description: str, exprs: Sequence[tuple[str, str]], *, width: int = 12) -> statetimeline.Panel:
    """A state timeline: a row per series, coloured while its value is above zero."""
    steps = [models.Threshold(value=None, color="transparent"), models.Threshold(value=0.5, color="blue")]
    return (
        statetimeline.Panel()
        .title(title)
        .description(description)
        .unit("short")
        .datasource(DATASOURCE)
        .targets(_targets(exprs))
        .span(width)
        .height(8)
        .show_value(common.VisibilityMode.NEVER)
        .thresholds(dashboard.ThresholdsConfig().mode(models.ThresholdsMode.ABSOLUTE).steps(steps))
        .color_scheme(dashboard.FieldColor().mode(models.FieldColorModeId.THRESHOLDS))
    )


def instant_table(
    title: str, description: str, columns: Sequence[tuple[str, str, str]], by: Sequence[str], link: str
) -> table.Panel:
    """One row per `by` label set, one column per (expr, column title, unit), joined on the labels;
    each row links to `link` (a dashboard URL with ${__data.fields.<label>} placeholders)."""
    targets: list[Any] = [
        query(expr, name, chr(ord("A") + i), instant=True) for i, (expr, name, _) in enumerate(columns)
    ]
    rename = {f"Value #{chr(ord('A') + i)}": name for i, (_, name, _) in enumerate(columns)}
    exclude = {"Time": True, **{f"Time {i + 1}": True for i in range(len(columns))}}
    panel = (
        table.Panel()
        .title(title)
        .description(description)
        .unit("short")
        .datasource(DATASOURCE)
        .targets(targets)
        .span(24)
        .height(8)
        .with_transformation(models.DataTransformerConfig(id_val="merge", options={}))
        .with_transformation(
            models.DataTransformerConfig(
                id_val="organize",
                options={
                    "excludeByName": exclude,
                    "renameByName": rename,
                    "indexByName": {label: i for i, label in enumerate(by)},
                },
            )
        )
        .data_links([dashboard.DashboardLink("Open the per-queue dashboard").url(link)])
    )
    for _, name, unit in columns:
        panel = panel.override_by_name(name, [models.DynamicConfigValue(id_val="unit", value=unit)])
    return panel


def dashboards_link(title: str) -> dashboard.DashboardLink:
    """A link in the dashboard's header to the other JobQueue dashboards, keeping variables and time."""
    return (
        dashboard.DashboardLink(title)
        .type(models.DashboardLinkType.DASHBOARDS)
        .tags(["jobqueue"])
        .include_vars(True)
        .keep_time(True)
    )


def to_json(built: dashboard.Dashboard) -> str:
    """The dashboard as Grafana imports it: stable key order, one trailing newline."""
    model = built.build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number  # stable ids: links to one panel (viewPanel=N) keep working
    text = json.dumps(model, cls=JSONEncoder, indent=2, sort_keys=True)
    return text + "\n"


def base(uid: str, title: str, description: str) -> dashboard.Dashboard:
    return (
        dashboard.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .editable()
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .tooltip(models.DashboardCursorSync.CROSSHAIR)
        .variables(variables())
    )
