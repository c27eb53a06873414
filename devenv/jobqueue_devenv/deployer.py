"""JobQueues applied to the local cluster and made ready to use from the host: for the e2e tests and the
benchmarks that run the whole product (`bench/autoscale_replay.py`).

`namespace_for` makes a namespace the operator watches (by a name prefix) and tears it down in the order
that lets workers shut down cleanly; `Deployer` applies JobQueues there, waits until they are Ready and
connects a producer and a Redis client to each managed broker by Pod IP.
"""

from __future__ import annotations

import contextlib
import gc
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Final

import redis
from celery import Celery

from jobqueue_devenv import demo, nodes
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer

READY_TIMEOUT: Final = 180
LOG_LINES: Final = 20
"""Lines of a node agent's log shown per Pod a failed tear-down left behind."""
"""Seconds for a JobQueue to become Ready: Redis starting, the workers connecting to it."""


@dataclass
class Deployed:
    """A JobQueue the operator made Ready, and a producer connected to its Redis by Pod IP."""

    namespace: str
    name: str
    url: str
    app: Celery
    redis: redis.Redis
    body: dict[str, Any] = field(default_factory=dict)

    def queues(self) -> list[str]:
        return [q["name"] for q in self.body["spec"]["queues"]]


def condition(body: dict[str, Any], type_: str) -> dict[str, Any] | None:
    """The condition of this type in a JobQueue's status, if written."""
    for item in (body.get("status") or {}).get("conditions") or []:
        if item["type"] == type_:
            return dict(item)
    return None


class Deployer:
    """Applies JobQueues in one namespace and connects to their brokers; closes every connection after."""

    def __init__(self, kube: demo.Kube, namespace: str) -> None:
        self.kube, self.namespace = kube, namespace
        self.deployed: list[Deployed] = []

    def __call__(self, body: dict[str, Any]) -> Deployed:
        name = body["metadata"]["name"]
        self.kube.kubectl("apply", "--server-side", "-n", self.namespace, "-f", "-", input=json.dumps(body))

        def ready() -> bool:
            got = self.kube.get("jobqueue", name, "-n", self.namespace)
            found = condition(got, "Ready")
            if found is None or found["status"] != "True":
                raise AssertionError(f"Ready: {found}")
            return True

        try:
            wait_until(ready, timeout=READY_TIMEOUT, what=f"JobQueue {self.namespace}/{name} Ready")
        except Exception as exc:
            pods = self.kube.kubectl("get", "pods", "-n", self.namespace, "-o", "wide")
            raise AssertionError(f"{exc}\n{pods}") from None
        url = demo.broker_url(self.kube, self.namespace, name)
        deployed = Deployed(self.namespace, name, url, producer.producer_app(url), redis.Redis.from_url(url), body)
        self.deployed.append(deployed)
        return deployed

    def close(self) -> None:
        gc.collect()  # results caught in reference cycles unsubscribe now, while Redis still runs
        for deployed in self.deployed:
            deployed.app.close()
            deployed.redis.close()


def slug(text: str, limit: int) -> str:
    """`text` as a DNS label part of at most `limit` characters."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit].strip("-")


@contextlib.contextmanager
def namespace_for(kube: demo.Kube, prefix: str, label: str) -> Iterator[str]:
    """A namespace `<prefix>-<label>-<random>` (an operator watching `<prefix>-*` sees it); deleted, with
    everything in it, afterwards."""
    name = f"{prefix}-{slug(label, 30)}-{uuid.uuid4().hex[:4]}"
    kube.kubectl("create", "namespace", name)
    wait_until(lambda: kube.kubectl("get", "serviceaccount", "default", "-n", name), timeout=30, what="default SA")
    try:
        yield name
    finally:
        tear_down(kube, name)


def tear_down(kube: demo.Kube, namespace: str) -> None:
    """Workers first, while their Redis still answers (a worker shutting down without its broker can hang
    until its grace period ends), then everything else; returns when no Pod of the namespace is left."""
    kube.kubectl("delete", "jobqueues", "--all", "-n", namespace, "--cascade=orphan")  # the operator lets go
    kube.kubectl("delete", "deployments", "--all", "-n", namespace, "--wait=true", "--timeout=120s")
    try:
        # The Sentinels stay with the broker: a worker on a sentinel:// broker finds its Redis through them.
        kube.kubectl("wait", "--for=delete", "pods", "-n", namespace, "-l",
                     "app.kubernetes.io/component notin (broker,sentinel)", "--timeout=120s")  # fmt: skip
    except RuntimeError as exc:
        raise RuntimeError(f"{exc}\n{pod_report(kube, namespace)}") from None
    kube.kubectl("delete", "namespace", namespace, "--wait=true", "--timeout=120s")


def pod_report(kube: demo.Kube, namespace: str) -> str:
    """What a failed wait shows: each Pod of `namespace` (node, phase, being deleted since), and what its
    node's agent last logged about it (CI keeps only the test's output)."""
    lines = []
    for pod in kube.get("pods", "-n", namespace)["items"]:
        meta, node = pod["metadata"], pod["spec"].get("nodeName") or ""
        phase = (pod.get("status") or {}).get("phase")
        lines.append(f"{meta['name']} on {node or 'no node'}: {phase}, deleted at {meta.get('deletionTimestamp')}")
        log = nodes.agent_log(kube.directory, node) if node else None
        if log is not None and log.exists():
            about = [line for line in log.read_text(errors="replace").splitlines() if meta["name"] in line]
            lines += [f"  {line}" for line in about[-LOG_LINES:]]
    return "\n".join(lines)
