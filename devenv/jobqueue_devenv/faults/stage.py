"""Where a fault scenario runs: its own namespace the operator watches, JobQueues whose results (and so
the ledger) go to a Redis outside their broker, and the reads and faults the scenarios share.

The ledger Redis is a JobQueue of its own (`ledger_broker`, one per run of the suite, no workers): a
scenario that kills or fills a broker leaves the record of what ran intact. Each scenario's namespace
gets a Secret with the ledger's URL, and its JobQueues name it in `spec.results.backendSecretRef`.
"""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from celery import Celery

from jobqueue_devenv import demo
from jobqueue_devenv.deployer import Deployed, Deployer, namespace_for
from jobqueue_devenv.faults.ledger import Ledger
from jobqueue_devenv.waiting import TimedOut, wait_until
from jobqueue_operator import naming
from jobqueue_worker import contract, producer

LEDGER_JOBQUEUE: Final = "ledger"
LEDGER_SECRET: Final = "fault-ledger"
WORKER_IMAGE: Final = "jobqueue-worker:dev"
DEMO_APP: Final = "jobqueue_worker.demo:app"


def queue(name: str, **fields: Any) -> dict[str, Any]:
    """One `spec.queues[]` entry: fixed replicas (no autoscaling) unless `fields` say otherwise."""
    return {"name": name, "replicas": 1, "autoscaling": {"enabled": False}, **fields}


@contextlib.contextmanager
def ledger_broker(kube: demo.Kube, prefix: str) -> Iterator[str]:
    """A managed Redis that no scenario faults, for the ledger; yields its URL (by Pod IP)."""
    with namespace_for(kube, prefix, "ledger") as namespace:
        deployer = Deployer(kube, namespace)
        try:
            body = manifest(LEDGER_JOBQUEUE, [queue("unused", replicas=0)], results=False)
            yield deployer(body).url
        finally:
            deployer.close()


def manifest(name: str, queues: Sequence[dict[str, Any]], *, results: bool = True, **spec: Any) -> dict[str, Any]:
    """A JobQueue of the built-in tasks; with `results`, its result backend is the ledger Redis."""
    body: dict[str, Any] = {"image": WORKER_IMAGE, "app": DEMO_APP, "queues": list(queues), **spec}
    if results:
        body["results"] = {"backendSecretRef": {"name": LEDGER_SECRET, "key": naming.URL_KEY}}
    return {"apiVersion": demo.GROUP_VERSION, "kind": "JobQueue", "metadata": {"name": name}, "spec": body}


@dataclass
class Target:
    """A JobQueue under test: its broker, a producer whose results go to the ledger, and the ledger."""

    deployed: Deployed
    app: Celery
    ledger: Ledger

    @property
    def run_id(self) -> str:
        return self.ledger.run_id

    @property
    def broker(self) -> redis.Redis:
        return self.deployed.redis

    def send(self, queue: str, kind: str, count: int, **kwargs: Any) -> list[str]:
        """Send `count` built-in tasks of this run; returns their ids (no result is waited for)."""
        results = producer.send(
            self.app, queue, kind, count, run_id=self.run_id, kwargs=kwargs or None, ignore_result=True
        )
        return [result.id for result in results]


@dataclass
class Stage:
    """One scenario's namespace, with the ledger Secret in it."""

    kube: demo.Kube
    namespace: str
    ledger_url: str
    deployer: Deployer
    targets: list[Target] = field(default_factory=list)

    def deploy(self, body: dict[str, Any]) -> Target:
        """Apply a JobQueue (from `manifest`) and wait until it is Ready."""
        deployed = self.deployer(body)
        app = producer.producer_app(deployed.url, result_backend=self.ledger_url)
        target = Target(deployed, app, Ledger(redis.Redis.from_url(self.ledger_url), uuid.uuid4().hex))
        self.targets.append(target)
        return target

    def reconnect(self, target: Target) -> None:
        """Point the producer and the broker client at the JobQueue's Redis Pod as it is now (a restarted
        Pod may have a new IP)."""
        url = demo.broker_url(self.kube, self.namespace, target.deployed.name)
        if url == target.deployed.url:
            return
        target.app.close()
        target.deployed.redis.close()
        target.deployed.url, target.deployed.redis = url, redis.Redis.from_url(url)
        target.app = producer.producer_app(url, result_backend=self.ledger_url)

    def apply(self, body: dict[str, Any]) -> None:
        """Change a JobQueue (server-side apply, as a user would)."""
        self.kube.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=json.dumps(body))

    def jobqueue(self, name: str) -> dict[str, Any]:
        return self.kube.get("jobqueue", name, "-n", self.namespace)

    def status(self, name: str) -> dict[str, Any]:
        """The JobQueue's status as the operator wrote it (empty before its first write)."""
        return dict(self.jobqueue(name).get("status") or {})

    def worker_pods(self, jobqueue: str, queue: str) -> list[dict[str, Any]]:
        """The queue's worker Pods that are not being deleted."""
        pods = self.kube.get("pods", "-n", self.namespace, "-l", naming.queue_selector(jobqueue, queue))["items"]
        return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]

    def ready_workers(self, jobqueue: str, queue: str) -> list[str]:
        return [pod["metadata"]["name"] for pod in self.worker_pods(jobqueue, queue) if is_ready(pod)]

    def force_delete(self, kind: str, name: str) -> float:
        """Delete with grace 0, as a node loss would; returns when the request was made."""
        at = time.time()
        self.kube.kubectl("delete", kind, name, "-n", self.namespace, "--grace-period=0", "--force", "--wait=false")
        return at

    def events(self, reason: str) -> list[dict[str, Any]]:
        found = self.kube.get("events", "-n", self.namespace, "--field-selector", f"reason={reason}")
        return list(found["items"])

    def wait_for_event(self, reason: str, timeout: float = 20) -> bool:
        """An Event of this reason in the namespace within `timeout` (the operator posts on its tick)."""
        try:
            wait_until(lambda: self.events(reason), timeout=timeout, what=f"a {reason} Event", interval=0.5)
        except TimedOut:
            return False
        return True

    def close(self) -> None:
        for target in self.targets:
            target.app.close()
            target.ledger.client.close()
        self.deployer.close()


@contextlib.contextmanager
def stage(kube: demo.Kube, prefix: str, scenario: str, ledger_url: str) -> Iterator[Stage]:
    """A fresh namespace for one scenario, torn down (workers first) afterwards."""
    with namespace_for(kube, prefix, scenario) as namespace:
        secret = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": LEDGER_SECRET},
            "data": {naming.URL_KEY: base64.b64encode(ledger_url.encode()).decode()},
        }
        kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(secret))
        here = Stage(kube, namespace, ledger_url, Deployer(kube, namespace))
        try:
            yield here
        finally:
            here.close()


def is_ready(pod: dict[str, Any]) -> bool:
    conditions = (pod.get("status") or {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def restarts(pods: Sequence[dict[str, Any]]) -> int:
    statuses = [c for pod in pods for c in (pod.get("status") or {}).get("containerStatuses") or []]
    return sum(c.get("restartCount", 0) for c in statuses)


def pause(seconds: float) -> None:
    """A scenario's own timing (a sampling interval, the broker's fsync window): never a wait for a
    condition, which is `wait_until`'s job."""
    threading.Event().wait(seconds)


def held_tasks(client: Any) -> dict[str, dict[str, str]]:
    """Pod name -> {task id: task name} of the deliveries each worker holds now, from the broker's own
    records (each incarnation's held tags, looked up in kombu's `unacked`)."""
    held: dict[str, dict[str, str]] = {}
    for raw in client.hvals(contract.WORKERS):
        registration = contract.Registration.from_json(raw)
        tags = list(client.hkeys(contract.held_key(registration.instance)))
        for entry in client.hmget(contract.UNACKED, tags) if tags else []:
            if entry is None:
                continue
            headers = json.loads(entry)[0].get("headers", {})
            held.setdefault(registration.pod, {})[headers.get("id", "")] = headers.get("task", "")
    return held


def wait_for_busy_pod(here: Stage, target: Target, queue: str, timeout: float = 120) -> tuple[str, set[str]]:
    """A ready worker Pod of `queue` holding at least one task of this run: (Pod name, the ids it holds)."""

    def busy() -> tuple[str, set[str]] | None:
        pods = set(here.ready_workers(target.deployed.name, queue))
        held = held_tasks(target.broker)
        for pod in sorted(pods & held.keys()):
            return pod, set(held[pod])
        return None

    return wait_until(busy, timeout=timeout, what=f"a {queue} worker holding a task", interval=0.2)
