"""The operator, run as a real process, against the real local cluster.

The node agent runs Pods, but the samples' images and apps are not real: what is checked here is the
children and the status the operator writes. Ready=True is shown with an external broker (a real
redis-server on 127.0.0.1) and queues that want no workers, and in test_operator_managed.py with a
managed Redis and running workers.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobqueue_devenv.deployer import condition
from jobqueue_devenv.paths import REPO
from jobqueue_devenv.waiting import TimedOut, wait_until
from jobqueue_worker.contract import WORKER_COMMAND
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    apply_jobqueue,
    external_jobqueue,
    get_jobqueue,
    url_secret,
)

pytestmark = pytest.mark.usefixtures("operator")

SAMPLE = yaml.safe_load((REPO / "manifests" / "samples" / "media.yaml").read_text())


def _wait_status(
    custom: client.CustomObjectsApi, namespace: str, name: str, check: Callable[[dict[str, Any]], bool], what: str
) -> dict[str, Any]:
    seen: list[dict[str, Any]] = []

    def probe() -> dict[str, Any] | None:
        body = get_jobqueue(custom, namespace, name)
        seen[:] = [body]
        status = body.get("status") or {}
        if status.get("observedGeneration") == body["metadata"]["generation"] and check(body):
            return body
        return None

    try:
        return wait_until(probe, timeout=60, what=what)
    except TimedOut as exc:  # say what the status was instead
        last = seen[0] if seen else {}
        raise TimedOut(
            f"{exc}; last seen: generation {last.get('metadata', {}).get('generation')}, status {last.get('status')}"
        ) from exc


def _ready(reason: str, value: str = "False") -> Callable[[dict[str, Any]], bool]:
    def check(body: dict[str, Any]) -> bool:
        ready = condition(body, "Ready")
        return ready is not None and ready["status"] == value and ready["reason"] == reason

    return check


def _deployments(apps: client.AppsV1Api, namespace: str, jobqueue: str) -> dict[str, client.V1Deployment]:
    listed = apps.list_namespaced_deployment(namespace, label_selector=f"jobqueue.dev/jobqueue={jobqueue}")
    return {d.metadata.name: d for d in listed.items}


def _env(deployment: client.V1Deployment) -> dict[str, str | None]:
    return {e.name: e.value for e in deployment.spec.template.spec.containers[0].env}


def _table_row(output: str) -> dict[str, str]:
    """The one row of `kubectl get` output, by column header (blank cells stay blank)."""
    header, row = output.splitlines()[:2]
    names = header.split()
    starts = [header.index(name) for name in names]
    ends = [*starts[1:], None]
    return {name: row[start:end].strip() for name, start, end in zip(names, starts, ends, strict=True)}


def test_sample_with_three_queues_and_a_managed_broker(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    apply_jobqueue(kubectl, ns, SAMPLE)
    body = _wait_status(custom, ns, "media", _ready("RedisStarting"), "media's first status")
    uid = body["metadata"]["uid"]

    deployments = _deployments(apps, ns, "media")
    assert set(deployments) == {"media-high-worker", "media-low-worker", "media-thumbnails-worker"}
    for deployment in deployments.values():
        (owner,) = deployment.metadata.owner_references
        assert (owner.kind, owner.uid, owner.controller) == ("JobQueue", uid, True)
        container = deployment.spec.template.spec.containers[0]
        assert container.command == list(WORKER_COMMAND)
        assert container.env[0].value_from.secret_key_ref.name == "media-redis-auth"
        assert container.readiness_probe.http_get.path == "/readyz"
    assert [deployments[f"media-{q}-worker"].spec.replicas for q in ("high", "low", "thumbnails")] == [0, 1, 2]
    high = deployments["media-high-worker"]
    assert _env(high)["JOBQUEUE_CONCURRENCY"] == "4"
    assert high.spec.template.spec.termination_grace_period_seconds == 330

    statefulset = apps.read_namespaced_stateful_set("media-redis", ns)
    assert statefulset.spec.template.spec.containers[0].command == ["redis-server"]
    assert statefulset.spec.persistent_volume_claim_retention_policy.when_deleted == "Retain"
    assert core.read_namespaced_service("media-redis", ns).spec.ports[0].port == 6379
    secret = core.read_namespaced_secret("media-redis-auth", ns)
    assert set(secret.data) == {"password", "url"}

    status = body["status"]
    assert status["queueCount"] == 3
    assert status["workers"] == "0/3"
    assert condition(body, "BrokerReady")["status"] == "False"  # type: ignore[index]
    assert condition(body, "Degraded")["status"] == "True"  # type: ignore[index]
    assert [q["name"] for q in status["queues"]] == ["high", "low", "thumbnails"]

    row = _table_row(kubectl("get", "jq", "-n", ns, "media").stdout)
    assert list(row) == ["NAME", "QUEUES", "BACKLOG", "UNSERVED", "WORKERS", "READY", "SCALING", "OBSERVED", "AGE"]
    # BACKLOG is blank: queue depth is not read yet, and unknown is not 0. SCALING and OBSERVED are the
    # autoscaler's: blank until its first tick, then the broker it cannot read yet, seconds ago.
    assert row | {"AGE": "", "SCALING": "", "OBSERVED": ""} == {
        "NAME": "media",
        "QUEUES": "3",
        "BACKLOG": "",
        "UNSERVED": "",
        "WORKERS": "0/3",
        "READY": "False",
        "SCALING": "",
        "OBSERVED": "",
        "AGE": "",
    }
    assert row["AGE"][-1] in "sm"
    assert row["SCALING"] in ("", "MetricsUnavailable")
    assert row["OBSERVED"] == "" or row["OBSERVED"][-1] in "sm"

    created = {"Created Deployment media-high-worker", "Created StatefulSet media-redis"}

    def media_events() -> set[str]:
        selector = "involvedObject.name=media,involvedObject.kind=JobQueue"
        return {e.message for e in core.list_namespaced_event(ns, field_selector=selector).items}

    # The reconcile posts its Events after it writes the status waited for above: wait for them, do not race them.
    wait_until(lambda: created <= media_events(), timeout=15, what=f"events {sorted(created)}")
    password = secret.data["password"]
    edited = copy.deepcopy(SAMPLE)
    edited["spec"]["image"] = "ghcr.io/acme/media-worker:1.5"
    apply_jobqueue(kubectl, ns, edited)
    # Redis may be up by now (the node agent runs it): any Ready condition of generation 2 will do.
    _wait_status(custom, ns, "media", lambda b: condition(b, "Ready") is not None, "media's status for generation 2")
    for deployment in _deployments(apps, ns, "media").values():
        assert deployment.spec.template.spec.containers[0].image == "ghcr.io/acme/media-worker:1.5"
    assert core.read_namespaced_secret("media-redis-auth", ns).data["password"] == password

    kubectl("delete", "jq", "-n", ns, "media", "--wait=true")

    def gone() -> bool:
        selector = "jobqueue.dev/jobqueue=media"
        return not (
            apps.list_namespaced_deployment(ns, label_selector=selector).items
            or apps.list_namespaced_stateful_set(ns, label_selector=selector).items
            or core.list_namespaced_service(ns, label_selector=selector).items
            or core.list_namespaced_secret(ns, label_selector=selector).items
        )

    wait_until(gone, timeout=60, what="the garbage collector to delete media's children")


def test_edit_remove_and_add_queues_with_an_external_broker(
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
    redis_url: str,
) -> None:
    ns = operator_namespace
    url_secret(core, ns, "shop-broker", redis_url)
    queues = [{"name": n, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}} for n in ("orders", "mail", "audit")]
    document = external_jobqueue("shop", "shop-broker", queues)
    apply_jobqueue(kubectl, ns, document)
    body = _wait_status(custom, ns, "shop", _ready("AllQueuesAvailable", "True"), "shop Ready")
    assert condition(body, "BrokerReady")["reason"] == "BrokerReachable"  # type: ignore[index]
    assert condition(body, "Degraded")["status"] == "False"  # type: ignore[index]
    assert set(_deployments(apps, ns, "shop")) == {"shop-orders-worker", "shop-mail-worker", "shop-audit-worker"}
    assert not apps.list_namespaced_stateful_set(ns, label_selector="jobqueue.dev/jobqueue=shop").items
    assert _env(_deployments(apps, ns, "shop")["shop-orders-worker"])["JOBQUEUE_BROKER_URL"] is None

    # The autoscaler owns replicas: the operator leaves them alone on the next reconcile. (Paused first,
    # so no autoscaler tick between the scale and the edit changes them either: the scale waits until the
    # autoscaler says it is paused, since a tick already under way when the annotation lands still scales.)
    kubectl("annotate", "--overwrite", "-n", ns, "jq/shop", "jobqueue.dev/autoscaling-paused=true")
    document["metadata"]["annotations"] = {"jobqueue.dev/autoscaling-paused": "true"}

    def paused(body: dict[str, Any]) -> bool:
        return (condition(body, "ScalingActive") or {}).get("reason") == "AutoscalingPaused"

    _wait_status(custom, ns, "shop", paused, "the autoscaler paused")
    apps.patch_namespaced_deployment_scale("shop-orders-worker", ns, {"spec": {"replicas": 2}})

    document["spec"]["queues"] = [
        {"name": "orders", "concurrency": 6, "autoscaling": {"minReplicas": 0, "maxReplicas": 3}},
        {"name": "audit", "autoscaling": {"minReplicas": 0, "maxReplicas": 3}},
        {"name": "billing", "replicas": 0},
    ]
    apply_jobqueue(kubectl, ns, document)

    # The workers' app (tasks.app) does not exist: the two replicas the "autoscaler" asked for never become
    # available.
    # available: not Ready, and the reason names the queue (and, once its Pods crash, why they do).
    def orders_unavailable(body: dict[str, Any]) -> bool:
        ready = condition(body, "Ready") or {}
        return ready.get("reason") in ("WorkersUnavailable", "WorkersFailing") and "orders" in ready["message"]

    body = _wait_status(custom, ns, "shop", orders_unavailable, "shop at generation 2")
    ready = condition(body, "Ready") or {}
    assert "orders (0/2 available)" in ready["message"] or "queue orders: Pod" in ready["message"]
    deployments = wait_until(
        lambda: (
            (d := _deployments(apps, ns, "shop"))
            and set(d) == {"shop-orders-worker", "shop-audit-worker", "shop-billing-worker"}
            and d
        ),
        timeout=30,
        what="mail's Deployment deleted, billing's created",
    )
    orders = deployments["shop-orders-worker"]
    assert _env(orders)["JOBQUEUE_CONCURRENCY"] == "6"
    assert orders.spec.replicas == 2
    expected = {
        "Deleted Deployment shop-mail-worker",
        "Created Deployment shop-billing-worker",
        "Updated Deployment shop-orders-worker",
    }

    def event_messages() -> set[str]:
        selector = "involvedObject.name=shop,involvedObject.kind=JobQueue"
        return {e.message for e in core.list_namespaced_event(ns, field_selector=selector).items}

    # Events are posted after the children are applied: wait for them rather than read once.
    wait_until(lambda: expected <= event_messages(), timeout=30, what=f"events {sorted(expected)}")

    kubectl("delete", "jq", "-n", ns, "shop", "--wait=true")
    wait_until(lambda: not _deployments(apps, ns, "shop"), timeout=60, what="shop's Deployments deleted")


@pytest.mark.parametrize(
    ("case", "secret", "reason", "words"),
    [
        ("missing-secret", None, "BrokerSecretMissing", "does not exist"),
        ("wrong-scheme", "http://127.0.0.1:6379/0", "BrokerUnreachable", "redis://, rediss:// or sentinel://"),
        ("closed-port", "redis://127.0.0.1:1/0", "BrokerUnreachable", "does not answer PING"),
        ("no-host", "redis:///0", "BrokerUnreachable", "names no host"),
    ],
)
def test_a_bad_external_broker_is_not_ready_with_a_reason_and_an_event(
    case: str,
    secret: str | None,
    reason: str,
    words: str,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
    redis_url: str,
    operator: Path,
) -> None:
    ns = operator_namespace
    name = f"bad-{case}"
    if secret is not None:
        url_secret(core, ns, name, secret)
    apply_jobqueue(kubectl, ns, external_jobqueue(name, name, [{"name": "q", "replicas": 0}]))
    body = _wait_status(custom, ns, name, _ready(reason), f"{name} not Ready with {reason}")
    assert words in condition(body, "Ready")["message"]  # type: ignore[index]
    assert ":1/0" not in condition(body, "Ready")["message"] or case == "closed-port"  # type: ignore[index]

    def warned() -> bool:
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name},type=Warning")
        return any(e.reason == reason for e in events.items)

    wait_until(warned, timeout=30, what=f"a Warning event {reason}")

    # Fixed, it converges without anyone touching the JobQueue.
    url_secret(core, ns, name, redis_url)
    _wait_status(custom, ns, name, _ready("AllQueuesAvailable", "True"), f"{name} Ready once the Secret is fixed")
    assert "Traceback" not in operator.read_text()
    kubectl("delete", "jq", "-n", ns, name)


def test_the_password_is_never_logged(
    kubectl: Kubectl, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str, operator: Path
) -> None:
    ns = operator_namespace
    document = copy.deepcopy(SAMPLE)
    document["metadata"]["name"] = "quiet"
    apply_jobqueue(kubectl, ns, document)
    _wait_status(custom, ns, "quiet", _ready("RedisStarting"), "quiet's status")
    password = base64.b64decode(core.read_namespaced_secret("quiet-redis-auth", ns).data["password"]).decode()
    assert len(password) >= 32
    assert password not in operator.read_text()
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=quiet")
    assert all(password not in (e.message or "") for e in events.items)
    kubectl("delete", "jq", "-n", ns, "quiet")
