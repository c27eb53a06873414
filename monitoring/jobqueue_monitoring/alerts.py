"""The alert rules, each with its runbook: one definition per alert, rendered to the Prometheus rule file
the chart ships (`rule_groups`) and to docs/runbooks/<Alert>.md (`runbooks.py`).

Per-queue thresholds are series the operator exports from the JobQueue spec (`alerts.backlogThreshold`,
`autoscaling.targetWaitSeconds`, `autoscaling.maxReplicas`), so one rule serves every queue with its own
threshold, and a queue without the field gets no such alert. There is no "worker down" alert on purpose:
workers scale to zero when their queue is idle.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

from jobqueue_monitoring import links

Severity = Literal["critical", "warning", "info"]
QUEUE: Final = ("namespace", "jobqueue", "queue")
JOBQUEUE: Final = ("namespace", "jobqueue")
GROUP: Final = "jobqueue"
OPERATOR_JOB: Final = "jobqueue-operator"
"""The `job` label of the operator's target: the chart's ServiceMonitor sets it (docs/monitoring.md)."""


@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    for_: str
    severity: Severity
    summary: str
    description: str
    """A Prometheus template: $labels and $value."""
    meaning: str
    confirm: list[str]
    """Commands (kubectl or PromQL) that show the problem, one per item; written as code in the runbook."""
    actions: list[str]
    labels_in_scope: tuple[str, ...] = QUEUE
    """Labels the expression keeps, which the description and the dashboard link may use."""
    dashboard: str = links.QUEUE_UID
    extra: dict[str, str] = field(default_factory=dict)

    def rule(self, runbook_base: str = links.RUNBOOK_BASE_URL) -> dict[str, Any]:
        annotations = {
            "summary": self.summary,
            "description": self.description,
            "runbook_url": links.runbook_url(self.name, runbook_base),
        }
        if self.labels_in_scope:
            annotations["dashboard_url"] = links.dashboard_path(self.dashboard, self.labels_in_scope)
        rule: dict[str, Any] = {"alert": self.name, "expr": self.expr}
        if self.for_ != "0m":
            rule["for"] = self.for_
        rule["labels"] = {"severity": self.severity, **self.extra}
        rule["annotations"] = annotations
        return rule


def _by(labels: tuple[str, ...]) -> str:
    return ", ".join(labels)


Q = _by(QUEUE)
J = _by(JOBQUEUE)
WHERE_Q = "{{ $labels.namespace }}/{{ $labels.jobqueue }} queue {{ $labels.queue }}"
WHERE_J = "JobQueue {{ $labels.namespace }}/{{ $labels.jobqueue }}"
STATUS = "kubectl jobqueue status <jobqueue> -n <namespace>"

ALERTS: Final = [
    Alert(
        name="JobQueueBacklogHigh",
        expr=f'max by ({Q}) (jobqueue_queue_depth{{state="ready"}})\n'
        f"  > on ({Q})\n"
        f"max by ({Q}) (jobqueue_queue_backlog_alert_threshold)",
        for_="15m",
        severity="warning",
        summary="A queue's backlog is above its alerts.backlogThreshold.",
        description=f"{WHERE_Q}: {{{{ $value }}}} tasks waiting, above the queue's alerts.backlogThreshold "
        "for 15 minutes.",
        meaning="More tasks wait in the queue than its owners said is normal (`queues[].alerts.backlogThreshold` "
        "in the JobQueue), and it has stayed so for 15 minutes: tasks start late. The autoscaler may be at its "
        "limit, the workers may be slow or failing, or producers may send more than usual.",
        confirm=[
            STATUS,
            f'max by ({Q}) (jobqueue_queue_depth{{state="ready"}})',
            f'max by ({Q}) (jobqueue_workers{{kind="desired"}})',
        ],
        actions=[
            "If the workers are at `autoscaling.maxReplicas` (JobQueueAtMaxReplicasBacklogGrowing fires too), "
            "raise `maxReplicas` or the queue's `concurrency`, if the cluster has room.",
            "If workers are fewer than wanted, look for Pods that do not start: "
            "`kubectl get pods -n <namespace> -l jobqueue.dev/queue=<queue slug>` and `kubectl describe pod`.",
            "If tasks fail or run long, see the Tasks row of the per-queue dashboard (failures by task, "
            "run-time percentiles) and the worker logs.",
            "If the backlog is expected (a planned bulk load), raise the threshold in the JobQueue.",
        ],
    ),
    Alert(
        name="JobQueueTaskWaitAboveTarget",
        expr=f"max by ({Q}) (jobqueue_queue_oldest_task_age_seconds)\n"
        f"  > on ({Q})\n"
        f"max by ({Q}) (jobqueue_queue_target_wait_seconds)",
        for_="10m",
        severity="warning",
        summary="The oldest waiting task is older than the queue's targetWaitSeconds.",
        description=f"{WHERE_Q}: the oldest waiting task has waited {{{{ $value | humanizeDuration }}}}, "
        "longer than the queue's autoscaling.targetWaitSeconds, for 10 minutes.",
        meaning="The queue scales on wait time (`autoscaling.targetWaitSeconds`) and still does not keep up: "
        "the oldest task in the queue has waited longer than the target for 10 minutes.",
        confirm=[
            STATUS,
            f"max by ({Q}) (jobqueue_queue_oldest_task_age_seconds)",
            "histogram_quantile(0.99, sum by (le, queue) (rate(jobqueue_worker_task_queue_wait_seconds_bucket[10m])))",
        ],
        actions=[
            "Check whether the autoscaler holds (JobQueueAutoscalerMetricsUnavailable) or is at its maximum "
            "(JobQueueAtMaxReplicasBacklogGrowing) and act on that alert.",
            "Look for a few very long tasks blocking the workers (run-time percentiles on the per-queue "
            "dashboard); set `timeLimitSeconds` or move them to a queue of their own.",
            "Tasks sent with an ETA or countdown count from their ETA; a task with a very old send time "
            "(clock skew on the producer) shows up here too: compare with the queue-wait percentiles.",
        ],
    ),
    Alert(
        name="JobQueueAtMaxReplicasBacklogGrowing",
        expr=f'(\n  max by ({Q}) (jobqueue_workers{{kind="desired"}})\n'
        f"    >= on ({Q})\n"
        f"  max by ({Q}) (jobqueue_autoscaling_max_replicas)\n)\n"
        f"and on ({Q})\n"
        f'(max by ({Q}) (deriv(jobqueue_queue_depth{{state="ready"}}[15m])) > 0)',
        for_="15m",
        severity="warning",
        summary="A queue runs at its maxReplicas and its backlog keeps growing.",
        description=f"{WHERE_Q} runs at its autoscaling.maxReplicas ({{{{ $value }}}} workers) and its backlog "
        "has grown for 15 minutes.",
        meaning="The autoscaler wants more workers than `autoscaling.maxReplicas` allows, and the waiting "
        "tasks keep growing: the queue cannot catch up on its own.",
        confirm=[
            STATUS,
            f'max by ({Q}) (jobqueue_workers{{kind="desired"}})',
            f'max by ({Q}) (deriv(jobqueue_queue_depth{{state="ready"}}[15m]))',
        ],
        actions=[
            "Raise `autoscaling.maxReplicas` (and check the namespace's ResourceQuota and the cluster's "
            "capacity), or raise the queue's `concurrency` if its workers have CPU to spare.",
            "If the arrival rate is unusual, find the producer: throughput by state on the per-queue dashboard.",
        ],
    ),
    Alert(
        name="JobQueueTaskFailureRatioHigh",
        expr=f'sum by ({Q}) (rate(jobqueue_worker_tasks_total{{state="failed"}}[10m]))\n'
        "/\n"
        f'sum by ({Q}) (rate(jobqueue_worker_tasks_total{{state=~"succeeded|failed"}}[10m]))\n'
        "> 0.05",
        for_="10m",
        severity="warning",
        summary="More than 5% of a queue's tasks fail.",
        description=f"{WHERE_Q}: {{{{ $value | humanizePercentage }}}} of the tasks finished in the last "
        "10 minutes failed.",
        meaning="Over 5% of the task attempts that finished in the last 10 minutes raised an exception, hit "
        "their hard time limit or lost their worker process. Retries are not counted as failures.",
        confirm=[
            f'sum by ({Q}, task) (rate(jobqueue_worker_tasks_total{{state="failed"}}[10m]))',
            "kubectl logs -n <namespace> -l jobqueue.dev/queue=<queue slug> --tail=200 | grep -i -B2 -A20 traceback",
        ],
        actions=[
            "Find the failing task on the per-queue dashboard (Failures by task) and read its traceback in "
            "the worker logs.",
            "A dependency being down (database, API) fails many tasks at once: fix it, then retry the failed "
            "tasks from your application.",
            "Failures right after a deploy of a new image: roll the JobQueue's `image` back.",
        ],
    ),
    Alert(
        name="JobQueueBrokerDown",
        expr=f"max by ({J}) (jobqueue_broker_up) == 0",
        for_="5m",
        severity="critical",
        summary="The operator cannot read a JobQueue's Redis broker.",
        description=f"{WHERE_J}: the operator has not been able to read its broker for 5 minutes; "
        "workers are held at their replicas and producers may fail to send.",
        meaning="The operator's autoscaler reads every queue's depth from the broker on every tick; for "
        "5 minutes it could not (connection refused, wrong password, Secret missing, Redis down). Workers "
        "are not scaled while it lasts, and producers and workers probably cannot reach Redis either.",
        confirm=[
            "kubectl get jobqueue <jobqueue> -n <namespace> -o jsonpath='{.status.conditions}'",
            "kubectl get pods -n <namespace> -l app.kubernetes.io/component=broker",
            "kubectl get events -n <namespace> --field-selector involvedObject.name=<jobqueue>",
        ],
        actions=[
            "Managed broker: look at the Redis Pod (`<jobqueue>-redis-0`): is it Running, did it run out of "
            "memory (JobQueueBrokerMemoryHigh), is its PersistentVolumeClaim bound?",
            "Managed broker, `BrokerAuthFailed`: Redis refuses both the operator's own user (Secret "
            "`<jobqueue>-redis-operator`) and the password of `<jobqueue>-redis-auth`; someone changed Redis's "
            "passwords by hand, or edited the Secret of a Redis started before the operator had its own user. "
            "Put the previous password back into the Secret's `password` key (a new one is rotated in by the "
            "operator, docs/operator.md), or restart Redis onto the Secret's password, losing the tasks it holds: "
            "`kubectl annotate jq <jobqueue> jobqueue.dev/restart-broker=true`.",
            "Managed broker, `BrokerNodeLost` (the condition names the node): the Redis Pod's node is gone "
            "(powered off, crashed, cut off), and Kubernetes never starts a StatefulSet's Pod elsewhere while "
            "its node may still run it, so Redis stays down until you act. First make sure the machine is off "
            "(your cloud console, or `kubectl get node <node>` Ready Unknown and the machine unreachable): "
            "two copies of Redis on one volume would corrupt it. Then declare it off: `kubectl taint nodes "
            "<node> node.kubernetes.io/out-of-service=nodeshutdown:NoExecute` (Kubernetes deletes its Pods and "
            "detaches their volumes; the StatefulSet starts `<jobqueue>-redis-0` on another node), or delete "
            "only the Redis Pod: `kubectl delete pod <jobqueue>-redis-0 -n <namespace> --force "
            "--grace-period=0`. What is kept: with `broker.managed.persistence.enabled` the new Redis reloads "
            "its append-only file from the volume (everything acknowledged up to about a second before the "
            "loss), if the volume can move to another node (a network disk; a node-local volume such as "
            "local-path comes back only with its node); without persistence Redis starts empty: the tasks it "
            "held are lost and producers must send them again. Once the machine is back and healthy, remove "
            "the taint: `kubectl taint nodes <node> node.kubernetes.io/out-of-service-`.",
            "External broker: check the Secret named in `broker.external.urlSecretRef` and that Redis "
            "answers from inside the cluster: "
            "`kubectl run -it --rm redis-check --image=redis:7.4 -- redis-cli -u <url> ping`.",
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
    ),
    Alert(
        name="JobQueueOperatorAbsent",
        expr=f'absent(up{{job="{OPERATOR_JOB}"}} == 1)',
        for_="10m",
        severity="critical",
        summary="The jobqueue-operator has not been scraped for 10 minutes.",
        description="No jobqueue-operator target has been up for 10 minutes: JobQueues are not reconciled "
        "and their workers are not autoscaled.",
        meaning=f'Prometheus has no healthy target with `job="{OPERATOR_JOB}"`. Either the operator is not '
        "running, or Prometheus cannot scrape it. Without it, queues do not scale (a queue at zero workers "
        "stays at zero while tasks pile up) and spec changes are not applied. The JobQueues' status is then "
        "frozen as the operator last wrote it (`Ready=True`, a backlog of 0 while tasks wait): its "
        "`lastObservedTime` stops moving. The rule asks for a healthy target, not for a series of it, so it "
        "also fires when the target is gone altogether (`helm uninstall` removes the Service and the "
        "ServiceMonitor; the chart keeps this PrometheusRule, `prometheusRule.keepOnUninstall`).",
        confirm=[
            "kubectl get pods -n <operator namespace> -l app.kubernetes.io/name=jobqueue-operator",
            "kubectl logs -n <operator namespace> deploy/<release>-jobqueue-operator --tail=100",
            "kubectl get jq -A  # OBSERVED: how long ago the operator last observed each JobQueue",
            f'up{{job="{OPERATOR_JOB}"}}',
        ],
        actions=[
            "If the Pod is not running, `kubectl describe pod` it (image pull, OOM kill, RBAC errors in the log).",
            "If the release was uninstalled while JobQueues remain, install it again, or delete the JobQueues "
            "(`kubectl delete jq --all -A`) and then this PrometheusRule (`kubectl delete prometheusrule -n "
            "<operator namespace> <release>-jobqueue-operator`).",
            "If it runs but is not scraped: the ServiceMonitor needs the labels your Prometheus selects "
            "(`metrics.serviceMonitor.additionalLabels`, e.g. `release: <kube-prometheus-stack release>`).",
        ],
        labels_in_scope=(),
        dashboard=links.OVERVIEW_UID,
    ),
    Alert(
        name="JobQueueOperatorNoLeader",
        expr=f'max(up{{job="{OPERATOR_JOB}"}}) == 1\nunless max(jobqueue_operator_leader{{job="{OPERATOR_JOB}"}}) == 1',
        for_="5m",
        severity="critical",
        summary="jobqueue-operator replicas run, but none has led for 5 minutes.",
        description="jobqueue-operator targets are up but none holds the leader Lease: every replica stands "
        "by, so JobQueues are not reconciled and their workers are not autoscaled.",
        meaning="The operator's replicas elect a leader on a Lease in the release's namespace, and only the "
        'leader acts (docs/operator.md, "Two replicas"); `jobqueue_operator_leader` is 1 on it. A standby '
        "takes over within about 12 s of the leader's death, so a leaderless install for minutes means no "
        "replica can take the Lease: its Role is missing (`rbac.create: false`, or edited), the API server "
        "refuses or cannot store the Lease, or a process that is not a jobqueue-operator of this release "
        "holds it and renews it. A leader that cannot renew exits, so the log also shows restarts.",
        confirm=[
            f'jobqueue_operator_leader{{job="{OPERATOR_JOB}"}}',
            "kubectl get lease -n <operator namespace> <release>-jobqueue-operator -o yaml  # holder, renewTime",
            "kubectl logs -n <operator namespace> -l app.kubernetes.io/name=jobqueue-operator --tail=50 | grep Lease",
        ],
        actions=[
            "A log line `cannot update Lease` or `cannot create Lease` with `Forbidden`: restore the chart's "
            "`<release>-jobqueue-operator-leader-election` Role and RoleBinding (`helm upgrade` with "
            "`rbac.create: true`).",
            "A holderIdentity that is none of the operator's Pods and a renewTime that keeps moving: another "
            "process uses the same Lease name in this namespace; stop it, or give it another Lease name.",
            "To run without an election while you investigate: `--set replicas=1,leaderElection.enabled=false`.",
        ],
        labels_in_scope=(),
        dashboard=links.OVERVIEW_UID,
    ),
    Alert(
        name="JobQueueAutoscalerMetricsUnavailable",
        expr=f'sum by ({Q}) (rate(jobqueue_scaling_decisions_total{{reason="MetricsUnavailable"}}[5m])) > 0\n'
        f"unless on ({J})\n"
        f"(max by ({J}) (jobqueue_broker_up) == 0)",
        for_="10m",
        severity="warning",
        summary="The autoscaler cannot read a queue's metrics and holds its replicas.",
        description=f"{WHERE_Q}: the autoscaler could not read the queue's metrics for 10 minutes and holds "
        "the worker replicas where they are.",
        meaning="The queue's scaling input (its `autoscaling.prometheus` query, or the broker) cannot be read, "
        "so the autoscaler neither scales up nor down. A broker that is down has its own alert "
        "(JobQueueBrokerDown); this one is about the rest, mostly a Prometheus source that fails.",
        confirm=[
            "kubectl get events -n <namespace> --field-selector reason=MetricQueryFailed",
            f'sum by ({Q}) (rate(jobqueue_scaling_decisions_total{{reason="MetricsUnavailable"}}[5m]))',
        ],
        actions=[
            "Run the queue's `autoscaling.prometheus.query` against its `serverAddress` yourself: a syntax "
            "error, an empty result or a timeout holds the replicas.",
            "Check that the operator's Pod can reach that address (NetworkPolicy, DNS).",
        ],
    ),
    Alert(
        name="JobQueueWorkersRestarting",
        expr=f"sum by ({Q}) (increase(jobqueue_worker_restarts_total[15m])) > 3",
        for_="5m",
        severity="warning",
        summary="A queue's worker containers restart repeatedly.",
        description=f"{WHERE_Q}: worker containers restarted {{{{ $value | humanize }}}} times in 15 minutes.",
        meaning="The operator sees the queue's worker containers restart (their `restartCount` grows): "
        "crashes at start-up, failing liveness probes (a stuck worker), or OOM kills. Tasks in flight on a "
        "restarted worker are delivered again.",
        confirm=[
            "kubectl get pods -n <namespace> -l jobqueue.dev/queue=<queue slug>",
            "kubectl describe pod -n <namespace> <pod>   # Last State, Reason, Exit Code",
            "kubectl logs -n <namespace> <pod> --previous",
        ],
        actions=[
            "Exit code 2 at start: the worker refused its settings (one line on stderr names the variable).",
            "Liveness failures: a task blocks the main process (no heartbeat); set `timeLimitSeconds`.",
            "OOMKilled: see JobQueueWorkersOOMKilled.",
        ],
    ),
    Alert(
        name="JobQueueWorkersOOMKilled",
        expr=f"sum by ({Q}) (increase(jobqueue_worker_oom_kills_total[30m])) > 1",
        for_="0m",
        severity="warning",
        summary="A queue's worker containers are OOM-killed repeatedly.",
        description=f"{WHERE_Q}: {{{{ $value | humanize }}}} worker containers were OOM-killed in 30 minutes.",
        meaning="Worker containers of the queue ended with reason OOMKilled more than once in 30 minutes: "
        "the container's memory limit is lower than what its pool needs. Tasks running at the time are "
        "delivered again, and may be OOM-killed again.",
        confirm=[
            "kubectl get pods -n <namespace> -l jobqueue.dev/queue=<queue slug> "
            "-o jsonpath='{range .items[*]}{.metadata.name} {.status.containerStatuses[0].lastState}{\"\\n\"}{end}'",
            f"max by ({Q}) (jobqueue_worker_resident_memory_bytes)",
        ],
        actions=[
            "Raise the queue's `resources.limits.memory`, or lower its `concurrency`.",
            "Set `maxMemoryPerChild` below the limit divided by the concurrency, so a pool child is recycled "
            "between tasks before the kernel kills the container in the middle of one.",
        ],
    ),
    Alert(
        name="JobQueueNotReady",
        expr=f'max by ({J}) (jobqueue_status_condition{{condition="Ready", status="true"}}) == 0',
        for_="15m",
        severity="warning",
        summary="A JobQueue has not been Ready for 15 minutes.",
        description=f"{WHERE_J} has not been Ready for 15 minutes.",
        meaning="The JobQueue's `Ready` condition is False or Unknown: its broker, a worker Deployment or its "
        "spec has a problem the operator could not fix. The condition's reason and message say which.",
        confirm=[
            "kubectl get jobqueue <jobqueue> -n <namespace>   # Ready and Reason columns",
            "kubectl get jobqueue <jobqueue> -n <namespace> -o jsonpath='{.status.conditions}'",
            "kubectl get events -n <namespace> --field-selector involvedObject.name=<jobqueue>",
        ],
        actions=[
            "`BrokerReady` False (`RedisStarting`, `RedisFailing`, `RedisPodsRefused`, `BrokerAuthFailed`, "
            "`BrokerUnreachable`, `BrokerNodeLost`, `BrokerSecretMissing`): see JobQueueBrokerDown's runbook.",
            "`BrokerUpToDate` False does not make the JobQueue unready, but says what waits: "
            "`BrokerRestartHeld` (a change to `broker.managed` needs a Redis restart, held while Redis holds "
            "tasks: the message says how many; it restarts by itself once they are done, or at once, losing "
            "them, with `kubectl annotate jq <jobqueue> jobqueue.dev/restart-broker=true`), "
            "`BrokerPasswordRotating` (a new password in `<jobqueue>-redis-auth` is being rolled in).",
            "WorkersUnavailable / a stalled Deployment: `kubectl describe deploy <jobqueue>-<queue>-worker`, "
            "then the Pods (image, Secret or ConfigMap missing, quota).",
            "InvalidSpec: fix the field the message names and apply again.",
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
    ),
    Alert(
        name="JobQueueDeadLettersGrowing",
        expr=f"max by ({Q}) (delta(jobqueue_dead_letters[15m])) > 0",
        for_="5m",
        severity="warning",
        summary="Tasks keep landing in a queue's dead-letter list.",
        description=f"{WHERE_Q}: {{{{ $value | humanize }}}} more tasks in the dead-letter list over the last "
        "15 minutes.",
        meaning="Tasks that could not be run (given up after their retries, or refused) are moved to the "
        "queue's dead-letter list instead of being lost, and the list is growing.",
        confirm=[
            f"max by ({Q}) (jobqueue_dead_letters)",
            STATUS,
        ],
        actions=[
            "Read a few dead letters to see which task and why: `kubectl jobqueue deadletters <jobqueue> <queue> "
            "-n <namespace>` (it reads the broker, so it works at zero workers; docs/worker.md, dead letters).",
            "Fix the cause (a bug, a missing dependency), then requeue the dead letters or drop them.",
        ],
    ),
    Alert(
        name="JobQueueUnservedTasks",
        expr=f"max by ({Q}) (jobqueue_unserved_queue_tasks) > 0",
        for_="15m",
        severity="warning",
        summary="Tasks wait in a broker queue that no queue of the JobQueue serves.",
        description="{{ $labels.namespace }}/{{ $labels.jobqueue }}: {{ $value }} tasks wait in broker queue "
        "{{ $labels.queue }}, which no queue of the JobQueue serves, for 15 minutes.",
        meaning="A producer sends tasks to a Celery queue name that is not in the JobQueue's `queues`: no "
        "worker consumes them, so they wait forever (a typo in `queue=` or a task route, or a queue removed "
        "from the spec while tasks were still waiting).",
        confirm=[
            f"max by ({Q}) (jobqueue_unserved_queue_tasks)",
            "kubectl get jobqueue <jobqueue> -n <namespace> -o jsonpath='{.spec.queues[*].name}'",
        ],
        actions=[
            "Add the queue to the JobQueue's `queues`, or fix the producer's routing and move the waiting "
            "tasks to the right queue.",
        ],
    ),
    Alert(
        name="JobQueueBrokerMemoryHigh",
        expr=f"max by ({J}) (jobqueue_broker_used_memory_bytes)\n"
        "/\n"
        f"max by ({J}) (jobqueue_broker_max_memory_bytes > 0)\n"
        "> 0.9",
        for_="10m",
        severity="warning",
        summary="A JobQueue's Redis uses more than 90% of its maxmemory.",
        description=f"{WHERE_J}: Redis uses {{{{ $value | humanizePercentage }}}} of its maxmemory.",
        meaning="Redis is close to its `maxmemory`. When it is reached, Redis refuses writes (or evicts keys, "
        "with an eviction policy): producers fail to send, results are lost, and with an eviction policy "
        "waiting tasks themselves can be evicted. A managed broker (noeviction) that reaches it gets its "
        "maxmemory raised to a reserve by the operator so that its workers can drain it "
        "(`BrokerMemoryReserveOpened` Event); the ratio here is then of the reserve.",
        confirm=[
            f"max by ({J}) (jobqueue_broker_used_memory_bytes)",
            f'max by ({J}) (jobqueue_queue_depth{{state="ready"}})',
        ],
        actions=[
            "A large backlog is the usual cause: scale the workers (JobQueueBacklogHigh).",
            "Results that are never read pile up: lower `results.expiresSeconds`.",
            "Managed broker: raise its `resources.limits.memory` once it has drained: the change restarts "
            "Redis, which loses its waiting tasks unless `persistence` is on.",
            "External broker: raise its maxmemory at run time (`CONFIG SET maxmemory`), or purge what no one "
            "will run (`jobqueue-worker queue purge`).",
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
    ),
]


def rule_groups(runbook_base: str = links.RUNBOOK_BASE_URL) -> dict[str, Any]:
    """The Prometheus rule file: one group of every alert."""
    return {"groups": [{"name": GROUP, "rules": [alert.rule(runbook_base) for alert in ALERTS]}]}
