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
from jobqueue_operator.broker_replication import DEFAULT_MAX_LAG_SECONDS
from jobqueue_operator.build.redis import SENTINEL_PORT
from jobqueue_operator.reasons import Reason
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

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
    avoid: list[str] = field(default_factory=list)
    """What not to do: steps that look like a fix and make it worse (the runbook's last section, if any)."""

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

# -- a broker reached through Redis Sentinel (docs/broker.md): its series exist for sentinel:// brokers only

AVAILABILITY = "jobqueue_broker_availability"
"""1 for the current reason of the BrokerAvailable condition (the status condition metric has no reason)."""
LAG_ALERT_SECONDS: Final = DEFAULT_MAX_LAG_SECONDS // 2
"""Replicas acknowledge every second (lag 0 or 1); a stall of half of Redis's default min-replicas-max-lag is
well past normal and short of the replica ceasing to count for min-replicas-to-write."""
FAILOVERS_PER_HOUR: Final = 3
"""Master changes in an hour from which the broker is said to flap (one or two are a lost Pod or node)."""
MASTER = SENTINEL_MASTER_NAME
AVAILABLE_MESSAGE = (
    "kubectl get jobqueue <jobqueue> -n <namespace> "
    "-o jsonpath='{.status.conditions[?(@.type==\"BrokerAvailable\")].message}'"
)
BROKER_PODS = (
    "kubectl get pods -n <namespace> -o wide "
    "-l 'jobqueue.dev/jobqueue=<jobqueue>,app.kubernetes.io/component in (broker,sentinel)'"
)


def _sentinel_cli(command: str, pod: str = "<jobqueue>-sentinel-0") -> str:
    """A redis-cli command on a managed broker's Sentinel, with the password from its own environment."""
    return (
        f"kubectl exec -n <namespace> {pod} -- sh -c "
        f"'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli --no-auth-warning -p {SENTINEL_PORT} {command}'"
    )


def _member_cli(command: str) -> str:
    """A redis-cli command on a managed broker's member N (0, 1, 2)."""
    return (
        "kubectl exec -n <namespace> <jobqueue>-redis-<N> -- sh -c "
        f"'REDISCLI_AUTH=\"$REDIS_PASSWORD\" redis-cli --no-auth-warning {command}'"
    )


def _availability(*reasons: Reason) -> str:
    """The JobQueues whose BrokerAvailable reason is one of `reasons`."""
    match = f'reason="{reasons[0]}"' if len(reasons) == 1 else f'reason=~"{"|".join(reasons)}"'
    return f"max by ({J}) ({AVAILABILITY}{{{match}}}) == 1"


WHICH_BROKERS = (
    "Sentinel brokers only: the series behind it exist for a broker the operator reads through Redis Sentinel "
    "(a `sentinel://` URL). Today that is an external broker; the operator still reads a managed "
    "high-availability broker through one member (`redis://`), so this alert does not fire for it yet "
    '(docs/broker.md, "What the operator tells you"). The commands below are the managed broker\'s (its Pods '
    "`<jobqueue>-redis-N` and `<jobqueue>-sentinel-N`); the last step of *What to do* says how for your own "
    "Sentinels."
)
EXTERNAL = (
    "External Sentinels: run the same `SENTINEL` and `INFO replication` commands against your own Sentinels "
    f"and members (`redis-cli -h <sentinel> -p {SENTINEL_PORT} -a <password> --no-auth-warning SENTINEL MASTER "
    f"{MASTER}`, e.g. from `kubectl run -it --rm redis-check --image=redis:7.0 --restart=Never -- sh`); the "
    f"operator asks for the master name `{MASTER}`."
)
MEMBERS_NOT_ROLLED = (
    "a highly available broker's members run a changed `broker.managed` only once their Pods are replaced "
    "(`OnDelete`), and the operator's held restart does not know the members yet: it looks at "
    '`<jobqueue>-redis-0` only (docs/broker.md, "Managed high availability", "Not done yet")'
)
NO_HAND_PROMOTION = (
    "Do not promote a member by hand (`REPLICAOF NO ONE`) or point one at another (`REPLICAOF <host> <port>`) "
    "behind the Sentinels' back: two members then take writes as masters, and the Sentinels turn one back "
    "into a replica, discarding the writes it took. To move the master, ask the Sentinels: "
    f"`SENTINEL FAILOVER {MASTER}` on one of them promotes a replica the way an automatic failover does."
)
NO_SCALING = (
    "Do not scale the `<jobqueue>-redis` or `<jobqueue>-sentinel` StatefulSet (to 1, or to 0 and back): "
    "three members and three Sentinels are what the quorum of 2, `minReplicasToWrite` and the "
    "PodDisruptionBudgets count on. A member alone has no replica: with `minReplicasToWrite` 1 it refuses every "
    "write, and whatever it takes lives in one place."
)
NO_MASTER_RESTART = (
    "Do not delete or restart the master's Pod to reset the broker while replicas are out of sync: the "
    "Sentinels promote the most up-to-date replica they can use, and what it lacks is lost for good; with no "
    "usable replica, the broker is left without a master."
)
NO_MASS_SENTINEL_DELETE = (
    "Do not delete the Sentinel Pods together (`kubectl delete pod -l ...` is not an eviction, so the "
    "PodDisruptionBudget does not stop it): while fewer than 2 run, no failover can happen. One at a time, each "
    "Ready before the next."
)

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
    Alert(
        name="JobQueueBrokerNoMaster",
        expr=_availability(Reason.BROKER_NO_MASTER, Reason.BROKER_UNREACHABLE),
        for_="1m",
        severity="critical",
        summary="A Sentinel broker has had no master that takes writes for a minute.",
        description=f"{WHERE_J}: for 1 minute the Sentinels have named no working master of its broker, or none "
        "answered; producers cannot send and workers cannot take tasks.",
        meaning=f"{WHICH_BROKERS} Every tick the operator asks the Sentinels which master they name for "
        f"`{MASTER}` and asks that master. For a minute, `BrokerAvailable` has said `BrokerUnreachable` (no "
        "Sentinel answers) or `BrokerNoMaster` (no Sentinel knows the master name, or the master they name is "
        "flagged down, does not answer, or answers as a replica). A failover with the defaults takes "
        "`downAfterMilliseconds` (5 s) plus a few seconds (6 to 9 s measured, docs/broker.md), so a minute "
        "without a master means Sentinel could not promote a replica: none it reaches is fit (down, or cut off "
        "from the master for too long), fewer than the quorum of 2 Sentinels agree the master is down, or no "
        "majority of the Sentinels is reachable to authorize a failover. Until a master answers, every send "
        "fails and workers wait. JobQueueBrokerDown follows after 5 minutes (the operator's own reads go "
        "through the Sentinels too).",
        confirm=[
            AVAILABLE_MESSAGE,
            BROKER_PODS,
            _sentinel_cli(f"SENTINEL MASTER {MASTER}") + "  # flags (s_down, o_down), failover-state",
            _sentinel_cli(f"SENTINEL REPLICAS {MASTER}") + "  # each replica's flags and master-link-down-time",
            "kubectl logs -n <namespace> <jobqueue>-sentinel-0 --tail=100  # +sdown, +odown, +try-failover, "
            "-failover-abort-no-good-slave, +switch-master",
        ],
        actions=[
            "Sentinels that do not answer: their Pods (`kubectl describe pod -n <namespace> "
            "<jobqueue>-sentinel-N`): Pending (with `podAntiAffinity: required`, one node per Pod), crashing "
            "(`kubectl logs --previous`), or a NetworkPolicy between the operator and port "
            f"{SENTINEL_PORT}.",
            "The master is flagged down and no replica was promoted: read the Sentinel log. "
            "`-failover-abort-no-good-slave`: no replica is fit; bring a member back (its Pod restarts and its "
            "start-up script makes it a replica of the master the Sentinels name, docs/broker.md, "
            '"Bootstrap"). No `+odown`: fewer than 2 Sentinels see the master down; no `+elected-leader`: no '
            "majority of Sentinels answers (see JobQueueBrokerQuorumLost).",
            f"No Sentinel knows the master name: an external Sentinel group must monitor its master as `{MASTER}`.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_HAND_PROMOTION, NO_SCALING, NO_MASS_SENTINEL_DELETE],
    ),
    Alert(
        name="JobQueueBrokerWritesRefused",
        expr=_availability(Reason.BROKER_WRITES_REFUSED),
        for_="1m",
        severity="critical",
        summary="A Sentinel broker's master refuses writes: too few replicas in sync.",
        description=f"{WHERE_J}: its broker's master has answered writes with NOREPLICAS for 1 minute: fewer "
        "replicas acknowledge it within min-replicas-max-lag than min-replicas-to-write asks; producers cannot "
        "send.",
        meaning=f"{WHICH_BROKERS} The master runs with `min-replicas-to-write` "
        "(`highAvailability.minReplicasToWrite`, 1 by default) and `min-replicas-max-lag` (10 s): while fewer "
        "replicas than that acknowledged its stream within the lag, it refuses every write (`NOREPLICAS`) "
        "rather than take a task a failover could lose. Sends fail (the project's producer retries a refused "
        "send for up to 10 s), and workers cannot record or acknowledge the tasks they take. Right after a "
        "promotion this lasts about a second; for a minute, the replicas are down, taking a full copy, or "
        "lagging. With the defaults this is also the case of fewer than two members in sync.",
        confirm=[
            AVAILABLE_MESSAGE,
            f"max by ({J}, state) (jobqueue_broker_replicas)",
            _member_cli("INFO replication")
            + "  # on the master (role:master): min_slaves_good_slaves, each slaveN's state and lag",
            BROKER_PODS,
        ],
        actions=[
            "Replicas down: their Pods (`kubectl describe pod`, `kubectl logs --previous`): Pending for want of "
            "a node or a bound volume claim, or crashing. A member that comes back replicates the master by "
            "itself.",
            "A replica taking a full copy (`master_sync_in_progress:1` in its `INFO replication`): wait; the "
            "alert resolves when the copy is loaded. One that starts over and over: read the master's log for "
            "the reason the copy was cut (for example an output buffer limit).",
            "Replicas lagging: a replica short of CPU (throttled at its limit) or disk (its log: `Asynchronous "
            "AOF fsync is taking too long`) acknowledges late: see JobQueueBrokerReplicationLagHigh.",
            "To take writes without a replica while you repair (each then lives only on the master until a "
            "replica copies it): `CONFIG SET min-replicas-to-write 0` on every member takes effect at once and "
            "lasts until the member restarts; `highAvailability.minReplicasToWrite: 0` is the lasting setting "
            f"({MEMBERS_NOT_ROLLED}). JobQueueBrokerUnderReplicated then says so. A choice of availability over "
            "durability, not a fix.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_MASTER_RESTART, NO_HAND_PROMOTION, NO_SCALING],
    ),
    Alert(
        name="JobQueueBrokerUnderReplicated",
        expr=_availability(Reason.BROKER_UNDER_REPLICATED),
        for_="5m",
        severity="warning",
        summary="Fewer than two members of a Sentinel broker hold its writes, and it still takes them.",
        description=f"{WHERE_J}: for 5 minutes no replica of its broker has been in sync with the master, which "
        "still takes writes: losing the master now loses what only it holds.",
        meaning=f"{WHICH_BROKERS} No replica is in sync with the master (streamed to, acknowledged within "
        "`min-replicas-max-lag`), and the master takes writes anyway because `min-replicas-to-write` is 0 "
        "(with the default of 1 it would refuse them: JobQueueBrokerWritesRefused). Every task sent now lives "
        "only on the master: if it is lost, so are they, and a failover, if one can happen at all, promotes a "
        "replica without them.",
        confirm=[
            AVAILABLE_MESSAGE,
            f"max by ({J}, state) (jobqueue_broker_replicas)",
            _member_cli("INFO replication") + "  # on the master: connected_slaves, each slaveN's state and lag",
            BROKER_PODS,
        ],
        actions=[
            "Bring the replicas back in sync, as in JobQueueBrokerWritesRefused's runbook (Pods down, a full "
            "copy under way, replicas lagging).",
            "If tasks must not be lost, set `highAvailability.minReplicasToWrite` back to 1 (and `CONFIG SET "
            f"min-replicas-to-write 1` on every member: {MEMBERS_NOT_ROLLED}): producers are then refused while "
            "no replica is in sync, instead of acknowledged and at risk.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_MASTER_RESTART, NO_HAND_PROMOTION],
    ),
    Alert(
        name="JobQueueBrokerQuorumLost",
        expr=_availability(Reason.BROKER_QUORUM_LOST),
        for_="5m",
        severity="warning",
        summary="A Sentinel broker's Sentinels could not fail over if its master were lost.",
        description=f"{WHERE_J}: for 5 minutes SENTINEL CKQUORUM has refused: the Sentinels could not agree on, "
        "or authorize, a failover of its broker.",
        meaning=f"{WHICH_BROKERS} The broker works now, but `SENTINEL CKQUORUM {MASTER}` on the Sentinel "
        "with the latest configuration refuses: the Sentinels it reaches are fewer than the quorum (2), or "
        "fewer than a majority of all the Sentinels it knows, which a failover needs to be authorized. If the "
        "master is lost now, no replica is promoted and JobQueueBrokerNoMaster follows.",
        confirm=[
            AVAILABLE_MESSAGE,
            _sentinel_cli(f"SENTINEL CKQUORUM {MASTER}", "<jobqueue>-sentinel-<N>") + "  # on each of 0, 1, 2",
            _sentinel_cli(f"SENTINEL SENTINELS {MASTER}") + "  # the other Sentinels it knows and their flags",
            BROKER_PODS,
        ],
        actions=[
            "Sentinel Pods not Running or not Ready: `kubectl describe pod` and `kubectl logs` them (Pending "
            "with `podAntiAffinity: required` and fewer nodes than Pods; a crash at start). A Sentinel is Ready "
            "once it names a master.",
            "All Sentinel Pods run, yet they do not see each other: a NetworkPolicy or DNS between them (they "
            f"announce and resolve their Pod names, `<jobqueue>-sentinel-N.<jobqueue>-sentinel-headless`, port "
            f"{SENTINEL_PORT}).",
            "External Sentinels that still count Sentinels you removed (they never forget one by themselves): "
            f"`SENTINEL RESET {MASTER}` on each Sentinel, one at a time, 30 s apart (the Redis Sentinel "
            "documentation's procedure for removing Sentinels).",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_MASS_SENTINEL_DELETE, NO_SCALING],
    ),
    Alert(
        name="JobQueueBrokerReplicaOutOfSync",
        expr=f'sum by ({J}) (max by ({J}, state) (jobqueue_broker_replicas{{state!="in_sync"}})) > 0\n'
        f"unless on ({J})\n"
        f"({_availability(Reason.BROKER_WRITES_REFUSED, Reason.BROKER_UNDER_REPLICATED)})",
        for_="15m",
        severity="warning",
        summary="A replica of a Sentinel broker has not been in sync for 15 minutes.",
        description=f"{WHERE_J}: {{{{ $value }}}} of its broker's replicas have not been in sync with the master "
        "(lagging, taking a full copy, or down) for 15 minutes.",
        meaning=f"{WHICH_BROKERS} A replica is `lagging` (its last acknowledgement older than "
        "`min-replicas-max-lag`), `syncing` (taking a full copy) or `down` (known to the Sentinels, not "
        "streamed to) while another still holds every write. The service works, with one copy fewer: one more "
        "loss and the master refuses writes (JobQueueBrokerWritesRefused, which takes over from this alert), "
        "and a failover has fewer replicas to choose from.",
        confirm=[
            f"max by ({J}, state) (jobqueue_broker_replicas)",
            _sentinel_cli(f"SENTINEL REPLICAS {MASTER}") + "  # ip (the member's name), flags, master-link-status",
            _member_cli("INFO replication") + "  # on the master: which members it streams to, their lag",
            BROKER_PODS,
        ],
        actions=[
            "`down`: the replica's Pod is not running (Pending, crashing: `kubectl describe pod`, `kubectl logs "
            "--previous`), or runs but does not replicate: its log shows why (the master refusing its "
            "password: a password rotation does not set a highly available broker's `masterauth` yet, "
            'docs/broker.md, "Managed high availability", "Not done yet"; a master it cannot reach).',
            "`syncing` for a long time: a full copy that cannot finish; read the replica's and the master's logs.",
            "`lagging`: the replica acknowledges late (CPU throttled at its limit, a slow disk); see "
            "JobQueueBrokerReplicationLagHigh.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_MASTER_RESTART, NO_HAND_PROMOTION, NO_SCALING],
    ),
    Alert(
        name="JobQueueBrokerReplicationLagHigh",
        expr=f"max by ({J}) (max_over_time(jobqueue_broker_replication_lag_seconds[5m])) > {LAG_ALERT_SECONDS}",
        for_="15m",
        severity="warning",
        summary="A Sentinel broker's replicas keep falling behind their master.",
        description=f"{WHERE_J}: a replica of its broker has gone more than {LAG_ALERT_SECONDS} s without "
        "acknowledging the master's stream in every 5 minutes for 15 minutes (up to {{ $value }} s in the last 5).",
        meaning=f"{WHICH_BROKERS} A replica acknowledges the master's stream every second, so its lag (seconds "
        f"since its last acknowledgement) is 0 or 1. Lags above {LAG_ALERT_SECONDS} s, again and again over 20 "
        "minutes, mean a replica keeps stalling: short of CPU, waiting on its disk, or on a slow network. Past "
        "`min-replicas-max-lag` (10 s by default) it stops counting for `min-replicas-to-write`, and the "
        "writes it has not acknowledged are what a failover to it would lose "
        "(`jobqueue_broker_replication_lag_bytes`). A replica that stops for good is dropped by the master "
        "(`repl-timeout`, 60 s) and shows as `down` instead (JobQueueBrokerReplicaOutOfSync).",
        confirm=[
            f"max by ({J}) (jobqueue_broker_replication_lag_seconds)",
            f"max by ({J}) (jobqueue_broker_replication_lag_bytes)",
            _member_cli("INFO replication") + "  # on the master: each slaveN's lag; which one stalls",
            "kubectl top pods -n <namespace> -l 'jobqueue.dev/jobqueue=<jobqueue>,app.kubernetes.io/component=broker'",
        ],
        actions=[
            f"A replica at its CPU limit: raise `broker.managed.resources` (every member gets the same; "
            f"{MEMBERS_NOT_ROLLED}).",
            "A slow disk (the replica's log: `Asynchronous AOF fsync is taking too long`): the members' "
            "volumes need faster storage.",
            "Heavy writes (a burst of large tasks or results): the lag in bytes shows it; it passes with the "
            "burst. Large results belong in the result backend's expiry (`results.expiresSeconds`), not in "
            "the broker for long.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[NO_MASTER_RESTART, NO_HAND_PROMOTION],
    ),
    Alert(
        name="JobQueueBrokerFailoversFrequent",
        expr=f"sum by ({J}) (increase(jobqueue_broker_failovers_total[1h])) >= {FAILOVERS_PER_HOUR}",
        for_="0m",
        severity="warning",
        summary="A Sentinel broker's master keeps changing.",
        description=f"{WHERE_J}: its broker's master changed {{{{ $value | humanize }}}} times in the last hour.",
        meaning=f"{WHICH_BROKERS} The operator counts every change of master it sees "
        f"(`jobqueue_broker_failovers_total`, each also a `BrokerFailover` Event). {FAILOVERS_PER_HOUR} or more "
        "in an hour: the master keeps being lost. Each failover stops sends for its duration (6 to 9 s "
        "measured), loses what the old master acknowledged but had not replicated (a plain `apply_async`'s "
        "last writes; not a send the project's producer confirmed), and runs again the tasks in flight on the "
        "workers (docs/broker.md). Failovers while no operator ran are not counted, and the count starts again "
        "with each operator leader.",
        confirm=[
            "kubectl get events -n <namespace> --field-selector involvedObject.name=<jobqueue>,reason=BrokerFailover",
            BROKER_PODS + "  # RESTARTS, and the node of each member",
            "kubectl get pods -n <namespace> <jobqueue>-redis-<N> "
            "-o jsonpath='{.status.containerStatuses[0].lastState}'  # OOMKilled, Error",
            "kubectl logs -n <namespace> <jobqueue>-sentinel-0 --tail=200 | grep -E 'sdown|switch-master'",
        ],
        actions=[
            "Members OOM-killed: find what fills the broker (JobQueueBrokerMemoryHigh's runbook), or raise "
            f"`broker.managed.resources.limits.memory` ({MEMBERS_NOT_ROLLED}).",
            "Members restarting for another reason: `kubectl logs --previous` of the member.",
            "No restarts, but `+sdown` of a master that was alive: it did not answer the Sentinels within "
            "`downAfterMilliseconds` (a CPU-throttled master, a slow disk blocking it, network trouble between "
            "the Sentinels' and the master's nodes). Give the members CPU, or raise "
            "`highAvailability.downAfterMilliseconds` (failovers then take longer, and fewer pauses count as a "
            "dead master; the Sentinels take it as their Pods roll).",
            "Always the same node: look at the node (`kubectl describe node`), and cordon it while you do.",
            EXTERNAL,
        ],
        labels_in_scope=JOBQUEUE,
        dashboard=links.OVERVIEW_UID,
        avoid=[
            "Do not lower `downAfterMilliseconds` to make failovers quicker while they are frequent: more "
            "pauses then count as a dead master.",
            NO_HAND_PROMOTION,
        ],
    ),
]


def rule_groups(runbook_base: str = links.RUNBOOK_BASE_URL) -> dict[str, Any]:
    """The Prometheus rule file: one group of every alert."""
    return {"groups": [{"name": GROUP, "rules": [alert.rule(runbook_base) for alert in ALERTS]}]}
