"""`make demo`: the whole product on a throw-away local cluster, shown live, then torn down.

Steps: start a cluster, install the chart with Helm, run the operator, apply `examples/demo.yaml`, send
a burst of built-in tasks, show backlog and workers per queue until every task is done, tear down.

The operator runs IN the cluster, as a user runs it: `helm install` of the chart with its default values
but the image (`make images` built it; the node agent runs it with runc), its own ServiceAccount and RBAC.
The workers run from the worker image. The e2e tests use the same pieces (`Kube`, `operator`,
`broker_url`, `depths`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, TextIO

import redis

from jobqueue_devenv import binaries, cluster, images
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.nodeagent import layout as nodeagent_layout
from jobqueue_devenv.nodeagent import logs as nodeagent_logs
from jobqueue_devenv.paths import CHART as CHART
from jobqueue_devenv.paths import CRD_NAME
from jobqueue_devenv.paths import REPO as REPO
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_worker import producer, records

DEMO_MANIFEST: Final = REPO / "examples" / "demo.yaml"
RELEASE: Final = "jobqueue-operator"
OPERATOR_NAMESPACE: Final = "jobqueue-system"
DEMO_NAMESPACE: Final = "demo"
PRIORITY_SEP: Final = "\x06\x16"
"""kombu's separator between a queue name and its priority step in Redis list names."""
GROUP_VERSION: Final = "jobqueue.dev/v1alpha1"
TEST_RESYNC_SECONDS: Final = 3
"""The tests' and benchmarks' operators reconcile this often: they wait less for status to follow."""
METRICS_PORT: Final = 8081
"""The operator's /metrics port in its Pod (jobqueue-operator's default)."""
UNPULLED_IMAGE: Final = "example.invalid/worker:1"
"""The image of a JobQueue whose workers are never meant to run (tests and benchmarks of the operator alone)."""


def jobqueue_document(name: str, **spec: Any) -> dict[str, Any]:
    """A JobQueue as a user writes it, with `spec` as given."""
    return {"apiVersion": GROUP_VERSION, "kind": "JobQueue", "metadata": {"name": name}, "spec": spec}


@dataclass(frozen=True)
class Kube:
    """kubectl and helm bound to one local cluster."""

    kubectl_path: Path
    helm_path: Path
    kubeconfig: str
    directory: Path

    @classmethod
    def for_cluster(cls, state: cluster.ClusterState) -> Kube:
        found = binaries.find()
        return cls(found.kubectl, found.helm, state.kubeconfig, Path(state.directory))

    def _env(self) -> dict[str, str]:
        return dict(os.environ, KUBECONFIG=self.kubeconfig)

    def kubectl(self, *args: str, input: str | None = None) -> str:
        done = subprocess.run(
            [str(self.kubectl_path), *args], env=self._env(), input=input, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def get(self, *args: str) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(self.kubectl("get", *args, "-o", "json"))
        return body

    def helm(self, *args: str) -> str:
        done = subprocess.run([str(self.helm_path), *args], env=self._env(), capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout


# ---- the operator ------------------------------------------------------------------------------------


def require_images() -> None:
    """The operator and worker images must be in local storage: the cluster pulls from no registry."""
    missing = images.missing()
    if missing:
        raise DevenvError(f"images not built yet: {', '.join(missing)}", "run `make images`")


def image_values() -> dict[str, Any]:
    """The chart's image values for the image `make images` built: the one thing the local cluster needs
    (the README's kind path sets the same; only how the image gets into the cluster differs)."""
    return {"image": {"repository": images.OPERATOR.name, "tag": images.TAG, "pullPolicy": "Never"}}


def chart_values(
    watch: Sequence[str], resync_seconds: int | None = None, replicas: int | None = None
) -> dict[str, Any]:
    """Helm values: the image; with `watch`, only these namespaces (names or patterns; the chart makes
    patterns' RBAC cluster-wide); with `resync_seconds`, reconciles that often (tests wait less); with
    `replicas`, that many operator Pods (else the chart's default, two electing a leader)."""
    values = image_values()
    if watch:
        values["watch"] = {"namespaces": list(watch)}
    if resync_seconds is not None:
        values["resyncSeconds"] = resync_seconds
    if replicas is not None:
        values["replicas"] = replicas
    return values


def install_chart(
    kube: Kube,
    release: str,
    namespace: str,
    watch: Sequence[str],
    resync_seconds: int | None = None,
    replicas: int | None = None,
) -> None:
    """`helm upgrade --install` the chart (CRD included); waits until the JobQueue API is served."""
    with tempfile.NamedTemporaryFile("w", suffix=".yaml") as values:
        json.dump(chart_values(watch, resync_seconds, replicas), values)
        values.flush()
        kube.helm(
            "upgrade", "--install", release, str(CHART), "--namespace", namespace, "--create-namespace",
            "--values", values.name,
        )  # fmt: skip
    kube.kubectl("wait", "--for=condition=Established", "--timeout=30s", f"crd/{CRD_NAME}")
    wait_until(lambda: kube.kubectl("get", "jobqueues", "-A") is not None, timeout=30, what="JobQueues served")


def uninstall_chart(kube: Kube, release: str, namespace: str) -> None:
    """Remove the release (Helm keeps the CRD, as it always does) and its namespace."""
    kube.helm("uninstall", release, "--namespace", namespace, "--ignore-not-found", "--wait", "--timeout", "60s")
    kube.kubectl("delete", "namespace", namespace, "--wait=false", "--ignore-not-found")


def operator_pods(kube: Kube, release: str, namespace: str) -> list[dict[str, Any]]:
    """The release's operator Pods once as many as its Deployment wants are there and Ready (raises until then)."""
    selector = f"app.kubernetes.io/instance={release}"
    wanted = sum(
        int(d["spec"].get("replicas", 1)) for d in kube.get("deployments", "-n", namespace, "-l", selector)["items"]
    )
    pods = kube.get("pods", "-n", namespace, "-l", selector)["items"]
    live = [pod for pod in pods if "deletionTimestamp" not in pod["metadata"]]
    if len(live) != wanted:
        raise AssertionError(f"{len(live)} operator Pods, {wanted} wanted")
    for pod in live:
        conditions = pod.get("status", {}).get("conditions") or []
        if not any(c["type"] == "Ready" and c["status"] == "True" for c in conditions):
            raise AssertionError(f"operator Pod {pod['metadata']['name']} not Ready: {conditions}")
    return [dict(pod) for pod in live]


def _env(pod: Mapping[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}


def operator_pod(kube: Kube, release: str, namespace: str) -> dict[str, Any]:
    """The release's leading operator Pod, once every replica is Ready (raises until then): the one whose name
    its Lease holds (docs/operator.md), or the only one of a release without leader election."""
    live = operator_pods(kube, release, namespace)
    env = _env(live[0])
    if env.get("JOBQUEUE_LEADER_ELECTION") == "false":
        (only,) = live
        return only
    lease = kube.get("lease", env["JOBQUEUE_LEASE_NAME"], "-n", namespace)
    holder = lease.get("spec", {}).get("holderIdentity")
    leading = [pod for pod in live if pod["metadata"]["name"] == holder]
    if not leading:
        raise AssertionError(f"no operator Pod leads: Lease held by {holder!r}")
    return leading[0]


def pod_log(kube: Kube, pod: Mapping[str, Any], container: str = "operator") -> str:
    """Everything a container of a Pod wrote, every run (the node agent's files; `make logs` reads them too)."""
    meta = pod["metadata"]
    folder = nodeagent_layout.pod_folder(
        Path(kube.kubeconfig).parent, pod["spec"]["nodeName"], meta["namespace"], meta["name"], meta["uid"]
    )
    return nodeagent_logs.read_all(folder, container)


@dataclass(frozen=True)
class RunningOperator:
    where: str
    """Where it runs, for messages."""
    metrics_url: str
    """Its Prometheus /metrics."""
    namespace: str
    """The namespace of its release and Pod."""
    pod: str
    """Its leading Pod's name, when it was first Ready (a fault test may replace it)."""
    release: str = RELEASE
    """Its Helm release."""


@contextlib.contextmanager
def operator(
    kube: Kube,
    watch: Sequence[str],
    log: Path,
    release: str = RELEASE,
    release_namespace: str = OPERATOR_NAMESPACE,
    resync_seconds: int | None = TEST_RESYNC_SECONDS,
    replicas: int | None = None,
) -> Iterator[RunningOperator]:
    """The chart installed with Helm and its operator Pods, run by the node agent from the operator image,
    watching `watch` (every namespace when empty); `replicas` of them (else the chart's default: two, one
    leading). Yields once every replica is Ready and one leads.

    The Pods' output is copied to `log` when the release is uninstalled (the cluster folder may go soon
    after). Release names must differ between operators of one cluster: the chart's ClusterRoles are
    named after it. Raises after the teardown if an operator's container restarted.
    """
    pods: list[dict[str, Any]] = []
    try:
        install_chart(kube, release, release_namespace, watch, resync_seconds, replicas)
        pod = wait_until(
            lambda: operator_pod(kube, release, release_namespace), timeout=120, what="the operator Pods Ready"
        )
        pods = operator_pods(kube, release, release_namespace)
        where = f"in the cluster: Helm release {release} in {release_namespace}, leader Pod {pod['metadata']['name']}"
        metrics_url = f"http://{pod['status']['podIP']}:{METRICS_PORT}/metrics"
        yield RunningOperator(where, metrics_url, release_namespace, pod["metadata"]["name"], release)
    finally:
        restarts = 0
        for started in pods:
            name = started["metadata"]["name"]
            found = kube.kubectl("get", "pod", name, "-n", release_namespace, "--ignore-not-found", "-o", "json")
            current = json.loads(found) if found.strip() else {"status": {}}  # deleted on purpose: not a restart
            restarts += sum(c.get("restartCount", 0) for c in current["status"].get("containerStatuses") or [])
        uninstall_chart(kube, release, release_namespace)
        if pods:
            log.write_text("".join(f"==> Pod {p['metadata']['name']}\n{pod_log(kube, p)}" for p in pods))
    if restarts:
        raise RuntimeError(f"the operator's container restarted {restarts} time(s); see {log}")


# ---- the broker --------------------------------------------------------------------------------------


def broker_url(kube: Kube, namespace: str, jobqueue: str) -> str:
    """The managed broker's URL by Pod IP (the host reaches Pod IPs; Service names need `exec`)."""
    secret = kube.get("secret", naming.redis_secret(jobqueue), "-n", namespace)
    password = base64.b64decode(secret["data"][naming.PASSWORD_KEY]).decode()
    pod = kube.get("pod", f"{naming.redis(jobqueue)}-0", "-n", namespace)
    return f"redis://:{password}@{pod['status']['podIP']}:6379/0"


def queue_keys(queue: str, steps: Sequence[int] = (0, 3, 6, 9), prefix: str = "") -> list[str]:
    """The Redis lists of one Celery queue: one per priority step (step 0 is the plain name)."""
    return [f"{prefix}{queue}{PRIORITY_SEP}{step}" if step else f"{prefix}{queue}" for step in steps]


def in_flight_by_queue(unacked: Mapping[Any, Any]) -> dict[str, int]:
    """Count the `unacked` hash (delivered, not yet acked) per routing key, i.e. per queue."""
    counts: dict[str, int] = {}
    for raw in unacked.values():
        try:
            _message, _exchange, routing_key = json.loads(raw)
        except (ValueError, TypeError):
            continue
        counts[routing_key] = counts.get(routing_key, 0) + 1
    return counts


@dataclass(frozen=True)
class Depth:
    ready: int
    in_flight: int


def depths(client: Any, queues: Sequence[str], steps: Sequence[int] = (0, 3, 6, 9)) -> dict[str, Depth]:
    """Waiting (all priority lists) and in-flight tasks of each queue, read from Redis."""
    pipe = client.pipeline(transaction=False)  # reads only; a full Redis refuses every MULTI
    for queue in queues:
        for key in queue_keys(queue, steps):
            pipe.llen(key)
    pipe.hgetall("unacked")
    *lengths, unacked = pipe.execute()
    flying = in_flight_by_queue(unacked)
    per = len(steps)
    return {queue: Depth(sum(lengths[i * per : (i + 1) * per]), flying.get(queue, 0)) for i, queue in enumerate(queues)}


# ---- the live view -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueRow:
    queue: str
    ready: int
    in_flight: int
    workers: str  # ready/desired from the JobQueue status
    done: int
    sent: int


def render(rows: Sequence[QueueRow], elapsed: float) -> list[str]:
    """The live view's lines: one per queue, then the total."""
    lines = [f"{'queue':<10} {'waiting':>8} {'running':>8} {'workers':>8} {'done':>12}   t={elapsed:5.1f}s"]
    for row in rows:
        lines.append(
            f"{row.queue:<10} {row.ready:>8} {row.in_flight:>8} {row.workers:>8} {f'{row.done}/{row.sent}':>12}"
        )
    done, sent = sum(r.done for r in rows), sum(r.sent for r in rows)
    lines.append(f"{'total':<10} {sum(r.ready for r in rows):>8} {sum(r.in_flight for r in rows):>8} "
                 f"{'':>8} {f'{done}/{sent}':>12}")  # fmt: skip
    return lines


class LiveView:
    """Redraws in place on a terminal; prints plain blocks every `every` seconds otherwise."""

    def __init__(self, out: TextIO, every: float = 5.0) -> None:
        self.out, self.every = out, every
        self.tty = out.isatty()
        self.drawn = 0
        self.last = -every

    def show(self, lines: Sequence[str], now: float, force: bool = False) -> None:
        if self.tty:
            if self.drawn:
                self.out.write(f"\x1b[{self.drawn}F")  # back to the first line drawn
            self.out.write("".join(f"\x1b[2K{line}\n" for line in lines))
            self.drawn = len(lines)
        elif force or now - self.last >= self.every:
            self.out.write("\n".join(lines) + "\n\n")
            self.last = now
        self.out.flush()


# ---- the demo itself ---------------------------------------------------------------------------------


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def jobqueue_workers(kube: Kube, namespace: str, name: str) -> dict[str, str]:
    """queue -> "ready/desired" workers, from the JobQueue's status."""
    status = kube.get("jobqueue", name, "-n", namespace).get("status") or {}
    return {
        q["name"]: f"{q.get('readyReplicas', 0)}/{q.get('desiredReplicas', q.get('replicas', 0))}"
        for q in status.get("queues") or []
    }


def is_ready(kube: Kube, namespace: str, name: str) -> bool:
    status = kube.get("jobqueue", name, "-n", namespace).get("status") or {}
    return any(c["type"] == "Ready" and c["status"] == "True" for c in status.get("conditions") or [])


BURST: Final = {"high": (300, (0, 9)), "low": (100, (None,))}
"""queue -> (sleep tasks of 100 ms, Celery priorities cycled over them)."""
TASK_SECONDS: Final = 0.1


def run(timeout: float) -> None:
    """The whole demo; raises on any failure after tearing everything down."""
    started = time.monotonic()
    found = binaries.ensure()
    require_images()
    # JQ_CLUSTER_DIR, when set, is the demo's cluster folder too: a cluster running there (`make cluster-up`)
    # is used and left running; otherwise one is started there, or in a temporary folder, and torn down.
    chosen = os.environ.get("JQ_CLUSTER_DIR")
    directory = Path(chosen) if chosen else Path(tempfile.mkdtemp(prefix="jobqueue-demo-"))
    state, reused = cluster.up(directory, found, timeout=timeout)
    kube = Kube(found.kubectl, found.helm, state.kubeconfig, directory)
    try:
        where = "running already" if reused else f"ready in {state.ready_seconds:.1f}s"
        say(f"local cluster {where} (folder {directory})")
        namespace = kube.kubectl("create", "namespace", DEMO_NAMESPACE, "--dry-run=client", "-o", "yaml")
        kube.kubectl("apply", "-f", "-", input=namespace)  # a reused cluster may have it from an earlier demo
        # The chart's default values but the image: every namespace watched, its own resync period.
        with operator(kube, [], directory / "operator.log", resync_seconds=None) as running:
            say(f"operator running {running.where}")
            kube.kubectl("apply", "--server-side", "-n", DEMO_NAMESPACE, "-f", str(DEMO_MANIFEST))
            say(f"applied {DEMO_MANIFEST.relative_to(REPO)}; waiting for Redis and the workers")
            wait_until(lambda: is_ready(kube, DEMO_NAMESPACE, "demo"), timeout=120, what="JobQueue demo Ready")
            print(kube.kubectl("get", "jobqueue,pods", "-n", DEMO_NAMESPACE, "-o", "wide"), flush=True)
            url = broker_url(kube, DEMO_NAMESPACE, "demo")
            app = producer.producer_app(url)
            client = redis.Redis.from_url(url)
            runs = {queue: uuid.uuid4().hex for queue in BURST}
            for queue, (count, priorities) in BURST.items():
                kwargs = {"seconds": TASK_SECONDS}
                producer.send(app, queue, "sleep", count, priorities=priorities, run_id=runs[queue], kwargs=kwargs)
            total = sum(count for count, _ in BURST.values())
            say(f"sent {total} tasks: " + ", ".join(f"{n} to {q}" for q, (n, _) in BURST.items()))
            burst_started = time.monotonic()
            view = LiveView(sys.stdout)
            while True:
                now = time.monotonic()
                depth = depths(client, list(BURST))
                workers = jobqueue_workers(kube, DEMO_NAMESPACE, "demo")
                rows = [
                    QueueRow(q, depth[q].ready, depth[q].in_flight, workers.get(q, "?"),
                             len(records.read(client, runs[q], records.DONE)), BURST[q][0])
                    for q in BURST
                ]  # fmt: skip
                finished = all(row.done >= row.sent and row.ready == row.in_flight == 0 for row in rows)
                view.show(render(rows, now - burst_started), now, force=finished)
                if finished:
                    break
                if now - burst_started > 180:
                    raise RuntimeError("the burst did not finish within 180 s")
                time.sleep(0.5)
            elapsed = time.monotonic() - burst_started
            counts = [n for run_id in runs.values() for n in records.read(client, run_id, records.DONE).values()]
            if counts != [1] * total:
                raise RuntimeError(f"expected {total} tasks done once each, got counts {sorted(set(counts))}")
            say(f"all {total} tasks done in {elapsed:.1f}s ({total / elapsed:.0f} tasks/s), each exactly once")
            client.close()
            app.close()
    finally:
        if reused:
            say(f"tearing down: operator, Helm release, the demo's namespace (the cluster in {directory} stays)")
            kube.kubectl("delete", "namespace", DEMO_NAMESPACE, "--ignore-not-found", "--wait=false")
        else:
            say("tearing down: operator, Helm release, cluster")
            cluster.down(directory)
    say(f"demo finished in {time.monotonic() - started:.0f}s")
