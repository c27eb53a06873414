"""The live monitoring scenario: the chart installed on the local cluster, a real Prometheus on the host
scraping the operator and every worker Pod through Kubernetes service discovery with the relabelling of
the chart's own ServiceMonitor and PodMonitor (`jobqueue_devenv.monitors`), the chart's alert rules
loaded, and a burst of work through a JobQueue: a queue woken from zero by a priority burst, one of its
busy worker Pods killed on the way (its tasks redelivered), a few failing tasks on a steady queue
(dead-lettered), a few tasks sent to a queue the JobQueue does not list (unserved), drained, and scaled
back to zero.

The tests (tests/monitoring) evaluate every dashboard query and alert expression against this Prometheus;
`python -m jobqueue_monitoring.picture` draws the per-queue dashboard from it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import time
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from jobqueue_devenv import demo, monitors
from jobqueue_devenv.deployer import Deployed, Deployer, namespace_for
from jobqueue_devenv.faults.stage import held_tasks
from jobqueue_devenv.prometheus_process import RunningPrometheus, running_prometheus
from jobqueue_devenv.waiting import wait_until
from jobqueue_monitoring.generate import RULES_FILE
from jobqueue_operator import naming
from jobqueue_worker import producer, tasks

SCRAPE_INTERVAL: Final = "2s"
JOBQUEUE: Final = "shop"
BURST_QUEUE: Final = "burst"
STEADY_QUEUE: Final = "steady"
BURST_TASKS: Final = 150
TASK_SECONDS: Final = 0.4
FAILING_TASKS: Final = 6
STEADY_TASKS: Final = 20
LONG_TASKS: Final = 2
LONG_TASK_SECONDS: Final = 8.0
STEADY_TASK_SECONDS: Final = 0.2
UNLISTED_QUEUE: Final = "not-in-the-spec"
UNLISTED_TASKS: Final = 3
MANIFEST: Final[dict[str, Any]] = {
    "apiVersion": demo.GROUP_VERSION,
    "kind": "JobQueue",
    "metadata": {"name": JOBQUEUE},
    "spec": {
        "image": "jobqueue-worker:dev",
        "app": "jobqueue_worker.demo:app",
        # A memory limit gives Redis a maxmemory (80 % of it), which the broker-memory panels show.
        "broker": {"managed": {"resources": {"limits": {"memory": "256Mi"}}}},
        "queues": [
            {
                "name": BURST_QUEUE,
                "concurrency": 2,
                "maxTasksPerChild": 10,
                "alerts": {"backlogThreshold": 50},
                "autoscaling": {
                    "minReplicas": 0,
                    "maxReplicas": 3,
                    "targetTasksPerWorker": 10,
                    "scaleDownStabilizationSeconds": 5,
                    "idleSecondsBeforeZero": 10,
                },
            },
            {
                "name": STEADY_QUEUE,
                "concurrency": 1,
                "autoscaling": {"minReplicas": 1, "maxReplicas": 2, "targetWaitSeconds": 20},
            },
        ],
    },
}


@dataclass
class Live:
    """What the scenario leaves running for the checks: the Prometheus, the JobQueue, the burst's window."""

    kube: demo.Kube
    prometheus: RunningPrometheus
    jobqueue: Deployed
    operator_metrics_url: str
    monitors: list[dict[str, Any]]
    scrape_configs: list[dict[str, Any]]
    started: float
    """Wall-clock time just before the burst was sent."""
    ended: float = 0.0
    """Wall-clock time once the burst queue was back at zero workers (and scraped so)."""
    worker_pods: set[str] = field(default_factory=set)
    """Worker Pods seen Ready while the burst ran."""
    metadata: dict[str, str] = field(default_factory=dict)
    """Metric family -> type, as Prometheus read them while the burst's workers ran (its metadata API
    answers only for targets scraped now)."""

    @property
    def namespace(self) -> str:
        return self.jobqueue.namespace


def render_monitors(kube: demo.Kube, release: str, release_namespace: str, namespace: str) -> list[dict[str, Any]]:
    """The chart's ServiceMonitor and PodMonitor as `helm template` renders them for this release, with the
    monitoring API present, a short interval and the PodMonitor narrowed to the scenario's namespace."""
    values = {
        "metrics": {
            "serviceMonitor": {"enabled": True, "interval": SCRAPE_INTERVAL},
            "podMonitor": {
                "enabled": True,
                "interval": SCRAPE_INTERVAL,
                "namespaceSelector": {"matchNames": [namespace]},
            },
        }
    }
    output = kube.helm(
        "template", release, str(demo.CHART), "--namespace", release_namespace, "--kube-version", "1.36.3",
        "--api-versions", "monitoring.coreos.com/v1/ServiceMonitor",
        "--api-versions", "monitoring.coreos.com/v1/PodMonitor",
        "--set-json", f"metrics={json.dumps(values['metrics'])}",
        "--show-only", "templates/metrics.yaml", "--show-only", "templates/podmonitor.yaml",
    )  # fmt: skip
    return [dict(doc) for doc in monitors.monitors([doc for doc in yaml.safe_load_all(output) if doc])]


def _has_series(prometheus: RunningPrometheus, expression: str) -> bool:
    reply = prometheus.query(expression)
    if reply.get("status") != "success" or not reply["data"]["result"]:
        raise AssertionError(f"no series yet for {expression}")
    return True


def _value(prometheus: RunningPrometheus, expression: str) -> float:
    result = prometheus.query(expression)["data"]["result"]
    if not result:
        raise AssertionError(f"no value for {expression}")
    return float(result[0]["value"][1])


def _ready_worker_pods(live: Live) -> set[str]:
    pods = live.kube.get("pods", "-n", live.namespace, "-l", "app.kubernetes.io/component=worker")["items"]
    return {
        pod["metadata"]["name"]
        for pod in pods
        if any(c["type"] == "Ready" and c["status"] == "True" for c in pod.get("status", {}).get("conditions") or [])
    }


def sent_to(queue: str) -> str:
    """What `burst` sends to `queue`, in words (the picture's title says it of the queue it draws)."""
    if queue == BURST_QUEUE:
        return (
            f"{BURST_TASKS} tasks of {TASK_SECONDS:g} s at priorities 0 and 9 and {LONG_TASKS} of "
            f"{LONG_TASK_SECONDS:g} s, from zero workers and back (a busy worker Pod killed on the way)"
        )
    if queue == STEADY_QUEUE:
        return f"{STEADY_TASKS} tasks of {STEADY_TASK_SECONDS:g} s plus {FAILING_TASKS} failing"
    return "nothing"


def burst(live: Live) -> None:
    """Wake the burst queue from zero with a priority burst and a few failing tasks, plus steady work, then
    wait until it drained and scaled back to zero, as Prometheus sees it."""
    jq, prometheus = live.jobqueue, live.prometheus
    where = f'namespace="{jq.namespace}", jobqueue="{JOBQUEUE}"'
    wait_until(
        lambda: _value(prometheus, f'jobqueue_workers{{{where}, queue="{BURST_QUEUE}", kind="desired"}}') == 0,
        timeout=60,
        what="the burst queue at zero workers in Prometheus",
        interval=1,
    )
    run = uuid.uuid4().hex
    live.started = time.time()
    # Two long tasks first (a task of their own, `allocate`), so the worker killed surely holds one.
    long = {"megabytes": 1, "hold_seconds": LONG_TASK_SECONDS}
    producer.send(jq.app, BURST_QUEUE, "allocate", LONG_TASKS, priorities=(0,), run_id=run, kwargs=long)
    producer.send(jq.app, BURST_QUEUE, "sleep", BURST_TASKS, priorities=(0, 9), run_id=run,
                  kwargs={"seconds": TASK_SECONDS})  # fmt: skip
    _kill_a_busy_worker(live)
    # The failures on the steady queue's long-lived worker: a burst worker's counters go stale with it.
    producer.send(jq.app, STEADY_QUEUE, "fail", FAILING_TASKS, run_id=run)
    producer.send(jq.app, STEADY_QUEUE, "sleep", STEADY_TASKS, run_id=run, kwargs={"seconds": STEADY_TASK_SECONDS})
    producer.send(jq.app, UNLISTED_QUEUE, "noop", UNLISTED_TASKS)

    def done() -> bool:
        live.worker_pods |= _ready_worker_pods(live)
        for name, entries in prometheus.api("metadata")["data"].items():
            live.metadata.setdefault(name, entries[0]["type"])
        return producer.done_count(jq.app, run) == BURST_TASKS + STEADY_TASKS + LONG_TASKS

    wait_until(done, timeout=180, what="the burst done", interval=1)
    for expression, what in (
        (f'jobqueue_worker_tasks_total{{{where}, state="failed"}}', "the failed tasks scraped"),
        (f"jobqueue_tasks_redelivered_total{{{where}}}", "the killed worker's tasks redelivered"),
        (f'jobqueue_unserved_queue_tasks{{{where}, queue="{UNLISTED_QUEUE}"}}', "the unlisted queue reported"),
        (f"jobqueue_dead_letters{{{where}}} > 0", "the failed tasks dead-lettered"),
    ):
        wait_until(functools.partial(_has_series, prometheus, expression), timeout=60, what=what, interval=1)
    wait_until(
        lambda: _value(prometheus, f'jobqueue_workers{{{where}, queue="{BURST_QUEUE}", kind="current"}}') == 0,
        timeout=120,
        what="the burst queue back at zero workers in Prometheus",
        interval=1,
    )
    live.ended = time.time()


def _pods_holding(live: Live, task: str) -> set[str]:
    """Worker Pods whose process holds a delivery of `task` now, from the broker's own records."""
    return {pod for pod, held in held_tasks(live.jobqueue.redis).items() if task in held.values()}


def _kill_a_busy_worker(live: Live) -> None:
    """Force-delete (grace 0) one burst worker Pod while it holds a long task, as a node loss would."""
    selector = f"app.kubernetes.io/component=worker,{naming.QUEUE_LABEL}={naming.queue_slug(BURST_QUEUE)}"

    def busy_pod() -> str | None:
        pods = {p["metadata"]["name"] for p in live.kube.get("pods", "-n", live.namespace, "-l", selector)["items"]}
        busy = sorted(pods & _pods_holding(live, tasks.allocate.name))
        return busy[0] if busy else None

    pod = wait_until(busy_pod, timeout=120, what="a burst worker holding a long task", interval=0.5)
    live.kube.kubectl("delete", "pod", "-n", live.namespace, pod, "--grace-period=0", "--force")


@contextlib.contextmanager
def running(kube: demo.Kube, directory: Path, prefix: str) -> Iterator[Live]:
    """Operator, Prometheus and the JobQueue, Ready; the burst not sent yet (call `burst`)."""
    release = f"jqmon-{uuid.uuid4().hex[:5]}"
    with (
        demo.operator(kube, [f"{prefix}-*"], directory / "operator.log", release, release) as operator,
        namespace_for(kube, prefix, "monitoring") as namespace,
    ):
        rendered = render_monitors(kube, release, release, namespace)
        jobs = monitors.scrape_configs(rendered, kube.kubeconfig)
        data = directory / "prometheus"
        data.mkdir(exist_ok=True)
        with running_prometheus(data, [], [RULES_FILE], scrape_configs=jobs, interval=SCRAPE_INTERVAL) as prom:
            deployer = Deployer(kube, namespace)
            try:
                deployed = deployer(MANIFEST)
                live = Live(kube, prom, deployed, operator.metrics_url, rendered, jobs, started=time.time())
                wait_until(
                    lambda: _has_series(prom, f'jobqueue_workers{{namespace="{namespace}"}}'),
                    timeout=60,
                    what="the operator's series scraped through service discovery",
                    interval=1,
                )
                yield live
            finally:
                deployer.close()


def scrape_text(url: str) -> str:
    """A /metrics page (`promtool check metrics` reads it on stdin)."""
    with urllib.request.urlopen(url, timeout=5) as reply:
        return str(reply.read().decode())
