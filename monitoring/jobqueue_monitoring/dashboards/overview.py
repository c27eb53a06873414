"""The overview dashboard: every JobQueue at a glance (backlog, oldest task, workers, throughput, failures,
brokers, the replication of brokers reached through Sentinel), and the operator itself."""

from __future__ import annotations

from grafana_foundation_sdk.builders import dashboard

from jobqueue_monitoring import alerts, links
from jobqueue_monitoring.dashboards.common import (
    DATASOURCE,
    JOBQUEUE_SELECTOR,
    RATE,
    SELECTOR,
    base,
    dashboards_link,
    increments,
    instant_table,
    series,
    single_stat,
    timeline,
)

TITLE = "JobQueue / Overview"
J = "namespace, jobqueue"
FAILED = f'sum by ({J}) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state="failed"}}[{RATE}]))'
FINISHED = f'sum by ({J}) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state=~"succeeded|failed"}}[{RATE}]))'
QUEUE_LINK = (
    f"/d/{links.QUEUE_UID}/{links.DASHBOARD_SLUGS[links.QUEUE_UID]}?var-datasource=${{datasource}}"
    "&var-namespace=${__data.fields.namespace}&var-jobqueue=${__data.fields.jobqueue}&${__url_time_range}"
)


SENTINEL_ONLY = "Sentinel brokers only (a sentinel:// broker URL; docs/broker.md)."


def build() -> dashboard.Dashboard:
    failovers = (
        dashboard.AnnotationQuery()
        .name("Broker failovers")
        .datasource(DATASOURCE)
        .enable(True)
        .icon_color("red")
        .expr(increments(f"jobqueue_broker_failovers_total{{{JOBQUEUE_SELECTOR}}}", "1m", J) + " > 0")
    )
    return (
        base(links.OVERVIEW_UID, TITLE, "Every JobQueue: backlog, workers, throughput, failures and brokers.")
        .annotation(failovers)
        .link(dashboards_link("Queues"))
        .with_row(dashboard.Row("At a glance"))
        .with_panel(
            single_stat(
                "JobQueues",
                "JobQueues the operator reports on, in the chosen namespaces.",
                "short",
                f"count(max by ({J}) (jobqueue_broker_up{{{JOBQUEUE_SELECTOR}}}))",
            )
        )
        .with_panel(
            single_stat(
                "Not Ready",
                "JobQueues whose Ready condition is not True (JobQueueNotReady fires after 15 minutes).",
                "short",
                f'count(max by ({J}) (jobqueue_status_condition{{{JOBQUEUE_SELECTOR}, condition="Ready", '
                'status="true"}) == 0) or vector(0)',
                thresholds=((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            single_stat(
                "Waiting tasks",
                "Tasks waiting in every chosen queue, over every priority.",
                "short",
                f'sum(jobqueue_queue_depth{{{SELECTOR}, state="ready"}})',
            )
        )
        .with_panel(
            single_stat(
                "Tasks in flight",
                "Tasks delivered to a worker and not yet acknowledged.",
                "short",
                f'sum(jobqueue_queue_depth{{{SELECTOR}, state="in_flight"}})',
            )
        )
        .with_panel(
            single_stat(
                "Ready workers",
                "Worker Pods consuming, over every chosen queue.",
                "short",
                f'sum(jobqueue_workers{{{SELECTOR}, kind="ready"}})',
            )
        )
        .with_panel(
            single_stat(
                "Brokers down",
                "JobQueues whose broker the operator cannot read (JobQueueBrokerDown fires after 5 minutes).",
                "short",
                f"count(max by ({J}) (jobqueue_broker_up{{{JOBQUEUE_SELECTOR}}}) == 0) or vector(0)",
                thresholds=((None, "green"), (1, "red")),
            )
        )
        .with_panel(
            instant_table(
                "JobQueues",
                "One row per JobQueue, now: waiting and in-flight tasks, the oldest waiting task, workers, "
                "throughput, failure ratio, broker and Ready. A row opens the per-queue dashboard.",
                [
                    (f'sum by ({J}) (jobqueue_queue_depth{{{SELECTOR}, state="ready"}})', "Waiting", "short"),
                    (f'sum by ({J}) (jobqueue_queue_depth{{{SELECTOR}, state="in_flight"}})', "In flight", "short"),
                    (f"max by ({J}) (jobqueue_queue_oldest_task_age_seconds{{{SELECTOR}}})", "Oldest task", "s"),
                    (f'sum by ({J}) (jobqueue_workers{{{SELECTOR}, kind="desired"}})', "Workers desired", "short"),
                    (f'sum by ({J}) (jobqueue_workers{{{SELECTOR}, kind="ready"}})', "Workers ready", "short"),
                    (
                        f'sum by ({J}) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state="succeeded"}}[{RATE}]))',
                        "Succeeded/s",
                        "ops",
                    ),
                    (f"{FAILED}\n/\n{FINISHED}", "Failure ratio", "percentunit"),
                    (f"max by ({J}) (jobqueue_broker_up{{{JOBQUEUE_SELECTOR}}})", "Broker up", "bool_yes_no"),
                    (
                        f'max by ({J}) (jobqueue_status_condition{{{JOBQUEUE_SELECTOR}, condition="Ready", '
                        'status="true"})',
                        "Ready",
                        "bool_yes_no",
                    ),
                ],
                ["namespace", "jobqueue"],
                QUEUE_LINK,
            )
        )
        .with_row(dashboard.Row("Backlog and workers"))
        .with_panel(
            series(
                "Waiting tasks",
                "Tasks waiting per JobQueue, over all its queues and priorities.",
                "short",
                [(f'sum by ({J}) (jobqueue_queue_depth{{{SELECTOR}, state="ready"}})', "{{namespace}}/{{jobqueue}}")],
                width=8,
            )
        )
        .with_panel(
            series(
                "Tasks in flight",
                "Tasks delivered to a worker and not yet acknowledged, per JobQueue.",
                "short",
                [
                    (
                        f'sum by ({J}) (jobqueue_queue_depth{{{SELECTOR}, state="in_flight"}})',
                        "{{namespace}}/{{jobqueue}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Oldest waiting task",
                "Age of the oldest waiting task of each queue.",
                "s",
                [
                    (
                        f"max by ({J}, queue) (jobqueue_queue_oldest_task_age_seconds{{{SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}} {{queue}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Workers: desired and ready",
                "Worker Pods the autoscaler wants (desired) and those consuming (ready), per JobQueue.",
                "short",
                [
                    (
                        f'sum by ({J}, kind) (jobqueue_workers{{{SELECTOR}, kind=~"desired|ready"}})',
                        "{{namespace}}/{{jobqueue}} {{kind}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Throughput",
                "Tasks that succeeded per second, per JobQueue.",
                "ops",
                [
                    (
                        f'sum by ({J}) (rate(jobqueue_worker_tasks_total{{{SELECTOR}, state="succeeded"}}[{RATE}]))',
                        "{{namespace}}/{{jobqueue}}",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Failures and brokers"))
        .with_panel(
            series(
                "Failure ratio",
                "Failed over finished task attempts, per JobQueue "
                "(JobQueueTaskFailureRatioHigh fires above 5% over 10 minutes).",
                "percentunit",
                [(f"{FAILED}\n/\n{FINISHED}", "{{namespace}}/{{jobqueue}}")],
                width=8,
            )
        )
        .with_panel(
            series(
                "Broker up",
                "1 while the operator can read the JobQueue's broker, 0 when it cannot.",
                "bool_yes_no",
                [(f"max by ({J}) (jobqueue_broker_up{{{JOBQUEUE_SELECTOR}}})", "{{namespace}}/{{jobqueue}}")],
                width=8,
            )
        )
        .with_panel(
            series(
                "Broker memory",
                "Redis used memory per JobQueue, and its maxmemory (dashed) where it has one.",
                "bytes",
                [
                    (
                        f"max by ({J}) (jobqueue_broker_used_memory_bytes{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}} used",
                    ),
                    (
                        f"max by ({J}) (jobqueue_broker_max_memory_bytes{{{JOBQUEUE_SELECTOR}}} > 0)",
                        "{{namespace}}/{{jobqueue}} max",
                    ),
                ],
                width=8,
                dashed=[".* max"],
            )
        )
        .with_panel(
            series(
                "Dead letters",
                "Messages in the dead-letter lists, per JobQueue.",
                "short",
                [(f"sum by ({J}) (jobqueue_dead_letters{{{SELECTOR}}})", "{{namespace}}/{{jobqueue}}")],
            )
        )
        .with_panel(
            series(
                "Tasks in unserved broker queues",
                "Tasks waiting in broker queues that no queue of the JobQueue serves (a producer's typo, a queue "
                "removed from the spec).",
                "short",
                [
                    (
                        f"max by ({J}, queue) (jobqueue_unserved_queue_tasks{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}} {{queue}}",
                    )
                ],
            )
        )
        .with_row(dashboard.Row("Broker replication (Sentinel)"))
        .with_panel(
            timeline(
                "Broker availability",
                "The reason of each Sentinel broker's BrokerAvailable condition over time: BrokerReplicated "
                "(healthy), BrokerWritesRefused, BrokerUnderReplicated, BrokerQuorumLost, BrokerNoMaster or "
                "BrokerUnreachable (alerts JobQueueBrokerWritesRefused, ...UnderReplicated, ...QuorumLost and "
                f"...NoMaster fire after 1 to 5 minutes of one). {SENTINEL_ONLY}",
                [
                    (
                        f"max by ({J}, reason) (jobqueue_broker_availability{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}} {{reason}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Broker replicas by state",
                "Replicas of each Sentinel broker by state: in_sync (acknowledged within min-replicas-max-lag), "
                "lagging, syncing (taking a full copy), down. Absent while no working master is read. "
                f"{SENTINEL_ONLY}",
                "short",
                [
                    (
                        f"max by ({J}, state) (jobqueue_broker_replicas{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}} {{state}}",
                    )
                ],
            )
        )
        .with_panel(
            series(
                "Broker replication lag",
                "The largest replica lag of each Sentinel broker: seconds since a replica last acknowledged the "
                "master's stream (0 or 1 when healthy; JobQueueBrokerReplicationLagHigh fires when it passes "
                f"{alerts.LAG_ALERT_SECONDS} s again and again). {SENTINEL_ONLY}",
                "s",
                [
                    (
                        f"max by ({J}) (jobqueue_broker_replication_lag_seconds{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Broker replication lag (bytes)",
                "The largest distance between each Sentinel broker's master and a replica, in bytes: what a "
                "failover to that replica would lose now (a few hundred bytes is normal: replicas acknowledge "
                f"once a second). {SENTINEL_ONLY}",
                "bytes",
                [
                    (
                        f"max by ({J}) (jobqueue_broker_replication_lag_bytes{{{JOBQUEUE_SELECTOR}}})",
                        "{{namespace}}/{{jobqueue}}",
                    )
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Broker failovers in the last hour",
                "Changes of each Sentinel broker's master the operator saw in the last hour (each a "
                f"BrokerFailover Event; JobQueueBrokerFailoversFrequent fires at {alerts.FAILOVERS_PER_HOUR}). "
                f"The count starts again with each operator leader. {SENTINEL_ONLY}",
                "short",
                [
                    (
                        f"sum by ({J}) (increase(jobqueue_broker_failovers_total{{{JOBQUEUE_SELECTOR}}}[1h]))",
                        "{{namespace}}/{{jobqueue}}",
                    )
                ],
                width=8,
            )
        )
        .with_row(dashboard.Row("Operator"))
        .with_panel(
            series(
                "Operator up",
                f'Whether Prometheus scrapes the operator (target job="{alerts.OPERATOR_JOB}").',
                "bool_yes_no",
                [(f'max(up{{job="{alerts.OPERATOR_JOB}"}})', "operator")],
                width=8,
            )
        )
        .with_panel(
            series(
                "Reconcile duration (p50 / p95)",
                "Time to reconcile one JobQueue: apply its children and compute its status.",
                "s",
                [
                    (
                        "histogram_quantile("
                        f"{q}, sum by (le) (rate(jobqueue_reconcile_duration_seconds_bucket[{RATE}])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                width=8,
            )
        )
        .with_panel(
            series(
                "Autoscaler tick duration (p50 / p95)",
                "Time of one autoscaler tick of one JobQueue: measure, decide, scale, export.",
                "s",
                [
                    (
                        "histogram_quantile("
                        f"{q}, sum by (le) (rate(jobqueue_autoscaler_tick_duration_seconds_bucket[{RATE}])))",
                        f"p{round(q * 100)}",
                    )
                    for q in (0.5, 0.95)
                ],
                width=8,
            )
        )
    )
