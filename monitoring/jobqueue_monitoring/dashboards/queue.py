"""The per-queue dashboard: one queue (or several) in depth: backlog by state and priority, oldest task
against the wait target, workers and the autoscaler's decisions, task run and wait times, failures,
pool recycles and memory, dead letters and redeliveries."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from jobqueue_monitoring import links
from jobqueue_monitoring.dashboards.common import (
    DATASOURCE,
    RATE,
    SELECTOR,
    base,
    dashboards_link,
    increments,
    series,
    timeline,
)

TITLE = "JobQueue / Queue"
BY = "namespace, jobqueue, queue"


def _quantiles(metric: str) -> list[tuple[str, str]]:
    return [
        (
            f"histogram_quantile({q}, sum by (le, queue) (rate({metric}_bucket{{{SELECTOR}}}[{RATE}])))",
            f"{{{{queue}}}} p{round(q * 100)}",
        )
        for q in (0.5, 0.95, 0.99)
    ]


def build() -> dashboard.Dashboard:
    decisions = (
        dashboard.AnnotationQuery()
        .name("Scaling decisions")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("orange")
        .expr(
            increments(
                f'jobqueue_scaling_decisions_total{{{SELECTOR}, direction!="none"}}', "1m", "queue, direction, reason"
            )
            + " > 0"
        )
    )
    board = (
        base(
            links.QUEUE_UID,
            TITLE,
            "One JobQueue's queues: backlog, workers and autoscaling decisions, task timings and failures.",
        )
        .annotation(decisions)
        .link(dashboards_link("Overview"))
        .with_row(dashboard.Row("Backlog"))
        .with_panel(
            series(
                "Waiting and in-flight tasks",
                "Tasks per queue: waiting (ready, over every priority) and in flight (delivered to a worker, not "
                "yet acknowledged), stacked; the dashed line is the queue's alerts.backlogThreshold, when set.",
                "short",
                [
                    (f"max by (queue, state) (jobqueue_queue_depth{{{SELECTOR}}})", "{{queue}} {{state}}"),
                    (
                        f"max by (queue) (jobqueue_queue_backlog_alert_threshold{{{SELECTOR}}})",
                        "{{queue}} alert threshold",
                    ),
                ],
                stacked=True,
                dashed=[".* alert threshold"],
            )
        )
        .with_panel(
            series(
                "Waiting tasks by priority",
                "Waiting tasks per Redis priority list (the step: 0 is served first).",
                "short",
                [
                    (
                        f"max by (queue, priority) (jobqueue_queue_ready_by_priority{{{SELECTOR}}})",
                        "{{queue}} priority {{priority}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            series(
                "Oldest waiting task",
                "Age of the oldest waiting task against the queue's autoscaling.targetWaitSeconds (dashed), "
                "when set. Zero when nothing waits.",
                "s",
                [
                    (f"max by (queue) (jobqueue_queue_oldest_task_age_seconds{{{SELECTOR}}})", "{{queue}} oldest"),
                    (f"max by (queue) (jobqueue_queue_target_wait_seconds{{{SELECTOR}}})", "{{queue}} target"),
                ],
                dashed=[".* target"],
            )
        )
        .with_panel(
            series(
                "Queue wait (p50 / p95 / p99)",
                "Time from when a task was sent (or its ETA) to when a worker started it, as the workers measure it.",
                "s",
                _quantiles("jobqueue_worker_task_queue_wait_seconds"),
            )
        )
        .with_row(dashboard.Row("Workers and autoscaling"))
        .with_panel(
            series(
                "Workers: desired, current, ready",
                "Worker Pods of each queue: desired (what the autoscaler asked for), current (Pods that exist), "
                "ready (consuming); the dashed lines are autoscaling.minReplicas and maxReplicas.",
                "short",
                [
                    (f"max by (queue, kind) (jobqueue_workers{{{SELECTOR}}})", "{{queue}} {{kind}}"),
                    (f"max by (queue) (jobqueue_autoscaling_max_replicas{{{SELECTOR}}})", "{{queue}} max"),
                    (f"max by (queue) (jobqueue_autoscaling_min_replicas{{{SELECTOR}}})", "{{queue}} min"),
                ],
                dashed=[".* (max|min)"],
            )
        )
        .with_panel(
            timeline(
                "Scaling decisions by reason",
                "When the autoscaler changed a queue's replicas (or wanted to and was held), by direction and "
                "reason (Backlog, Latency, WakeFromZero, IdleToZero, Stabilizing, MetricsUnavailable, ...).",
                [
                    (
                        increments(f"jobqueue_scaling_decisions_total{{{SELECTOR}}}", RATE, "queue, direction, reason"),
                        "{{queue}} {{direction}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Busy worker slots",
                "Tasks running over the pool slots of the queue's ready workers (concurrency x workers).",
                "percentunit",
                [
                    (
                        f"sum by (queue) (jobqueue_worker_active_tasks{{{SELECTOR}}})\n/\n"
                        f"sum by (queue) (jobqueue_worker_concurrency{{{SELECTOR}}})",
                        "{{queue}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Worker restarts and OOM kills",
                "Worker container restarts and OOM kills per queue, as the operator sees them in Pod status.",
                "short",
                [
                    (
                        f"sum by (queue) (increase(jobqueue_worker_restarts_total{{{SELECTOR}}}[{RATE}]))",
                        "{{queue}} restarts",
                    ),
                    (
                        f"sum by (queue) (increase(jobqueue_worker_oom_kills_total{{{SELECTOR}}}[{RATE}]))",
                        "{{queue}} OOM kills",
                    ),
                ],
                bars=True,
                width=8,
            )
        )
        .with_panel(
            series(
                "Redelivered tasks",
                "Tasks of a dead worker put back on their queue by the operator, by reason.",
                "short",
                [
                    (
                        f"sum by (queue, reason) (increase(jobqueue_tasks_redelivered_total{{{SELECTOR}}}[{RATE}]))",
                        "{{queue}} {{reason}}",
                    )
                ],
                bars=True,
                width=8,
            )
        )
        .with_row(dashboard.Row("Tasks"))
        .with_panel(
            series(
                "Tasks finished per second, by state",
                "Task attempts per second that succeeded, failed, were retried or were rejected.",
                "ops",
                [
                    (
                        f"sum by (queue, state) (rate(jobqueue_worker_tasks_total"
                        f'{{{SELECTOR}, state=~"succeeded|failed|retried|rejected"}}[{RATE}]))',
                        "{{queue}} {{state}}",
                    )
                ],
                stacked=True,
            )
        )
        .with_panel(
            series(
                "Task run time (p50 / p95 / p99)",
                "Run time of one task attempt in the pool, from start to finish.",
                "s",
                _quantiles("jobqueue_worker_task_duration_seconds"),
            )
        )
        .with_panel(
            series(
                "Failures by task",
                "Failed task attempts per second, by task name (exceptions, hard time limits, lost workers).",
                "ops",
                [
                    (
                        f'sum by (task) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state="failed"}}[{RATE}]))',
                        "{{task}}",
                    )
                ],
                bars=True,
            )
        )
        .with_panel(
            series(
                "Failure ratio",
                "Failed over finished (succeeded + failed) task attempts, per queue; JobQueueTaskFailureRatioHigh "
                "fires above 5% over 10 minutes.",
                "percentunit",
                [
                    (
                        f'sum by (queue) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state="failed"}}[{RATE}]))\n'
                        "/\n"
                        f"sum by (queue) (rate(jobqueue_worker_tasks_total"
                        f'{{{SELECTOR}, state=~"succeeded|failed"}}[{RATE}]))',
                        "{{queue}}",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Worker processes and dead letters"))
        .with_panel(
            series(
                "Pool child recycles",
                "Pool processes replaced after reaching maxMemoryPerChild (memory) or maxTasksPerChild (max_tasks).",
                "short",
                [
                    (
                        f"sum by (queue, cause) (increase(jobqueue_worker_child_recycles_total{{{SELECTOR}}}[{RATE}]))",
                        "{{queue}} {{cause}}",
                    )
                ],
                bars=True,
                width=8,
            )
        )
        .with_panel(
            series(
                "Worker memory",
                "Resident memory of each queue's largest worker Pod (main process and pool children) and the "
                "average over its Pods.",
                "bytes",
                [
                    (f"max by (queue) (jobqueue_worker_resident_memory_bytes{{{SELECTOR}}})", "{{queue}} largest"),
                    (f"avg by (queue) (jobqueue_worker_resident_memory_bytes{{{SELECTOR}}})", "{{queue}} average"),
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Dead letters",
                "Messages in each queue's dead-letter list: tasks given up on, kept for inspection.",
                "short",
                [(f"max by (queue) (jobqueue_dead_letters{{{SELECTOR}}})", "{{queue}}")],
                width=8,
            )
        )
    )
    return board
