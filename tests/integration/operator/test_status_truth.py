"""The status tells the truth within seconds, with the operator's DEFAULT settings (a 30 s resync): the
status follows the children's changes, names the real cause of a failure, rolls the Pods when a Secret
they read changes, and leaves the autoscaler's replicas alone.

The operator runs on the host (through `python -m jobqueue_devenv exec`, so it resolves Service names like
a Pod); the node agent runs the Pods for real.
"""

from __future__ import annotations

import datetime
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client
from kubernetes import config as kube_config

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.paths import CHART
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import kube as operator_kube
from tests.conftest import Kubectl, helm
from tests.integration.operator.conftest import apply_jobqueue, get_jobqueue, jobqueue_manifest, url_secret


@pytest.fixture(scope="module")
def default_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` with its default resync (30 s) and tick (5 s); yields its log file."""
    log = tmp_path_factory.mktemp("default-operator") / "operator.log"
    with host_operator(local_cluster.kubeconfig, operator_namespace, log, cluster_dir=local_cluster.directory):
        yield log


def _wait_condition(
    custom: client.CustomObjectsApi,
    namespace: str,
    name: str,
    type_: str,
    check: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = condition(get_jobqueue(custom, namespace, name), type_)
        return found if found is not None and check(found) else None

    return wait_until(probe, timeout=timeout, what=f"{name}'s {type_} condition")


def _stamp(value: str) -> float:
    return datetime.datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.UTC).timestamp()


def test_ready_follows_the_redis_pod_within_seconds_with_the_default_resync(
    default_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    apply_jobqueue(kubectl, ns, jobqueue_manifest("prompt", [{"name": "q", "replicas": 0}]))
    ready = _wait_condition(custom, ns, "prompt", "Ready", lambda c: c["status"] == "True", timeout=90)
    pod = core.read_namespaced_pod("prompt-redis-0", ns)
    pod_ready = next(c for c in pod.status.conditions if c.type == "Ready")
    lag = _stamp(ready["lastTransitionTime"]) - pod_ready.last_transition_time.timestamp()
    # Status times have whole seconds; a 30 s resync would lag by up to 30 s.
    assert lag <= 3, f"Ready {lag:.0f}s after the Redis Pod"
    kubectl("delete", "jq", "-n", ns, "prompt")


def test_a_worker_that_cannot_import_its_app_is_named_in_the_status(
    default_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    document = jobqueue_manifest("crash", [{"name": "q", "replicas": 1}], app="no_such_module.celery:app")
    apply_jobqueue(kubectl, ns, document)
    found = _wait_condition(custom, ns, "crash", "Degraded", lambda c: c["reason"] == "WorkersFailing")
    assert "ModuleNotFoundError" in found["message"], found
    assert "no_such_module" in found["message"]

    def failing_event() -> bool:  # posted right after the status is written: wait for it, do not race it
        events = core.list_namespaced_event(ns, field_selector="involvedObject.name=crash,type=Warning")
        return any(e.reason == "WorkersFailing" and "ModuleNotFoundError" in e.message for e in events.items)

    wait_until(failing_event, timeout=15, what="a WorkersFailing Event naming ModuleNotFoundError")
    described = kubectl("describe", "jq", "-n", ns, "crash").stdout
    assert "ModuleNotFoundError" in described
    kubectl("delete", "jq", "-n", ns, "crash")


def test_pods_refused_by_a_quota_are_reported_with_the_api_servers_message(
    default_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    namespace: str,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    """A namespace whose quota allows no Pod: the Redis StatefulSet and the worker ReplicaSet are refused
    (FailedCreate); the JobQueue says so, quoting the API server."""
    core.create_namespaced_resource_quota(namespace, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    log = tmp_path / "operator.log"
    with host_operator(local_cluster.kubeconfig, namespace, log, cluster_dir=local_cluster.directory):
        apply_jobqueue(kubectl, namespace, jobqueue_manifest("refused", [{"name": "q", "replicas": 1}]))
        broker = _wait_condition(
            custom, namespace, "refused", "BrokerReady", lambda c: c["reason"] == "RedisPodsRefused"
        )
        assert "exceeded quota" in broker["message"], broker
        workers = _wait_condition(custom, namespace, "refused", "Degraded", lambda c: "queue q: " in c["message"])
        assert "exceeded quota" in workers["message"], workers
        ready = condition(get_jobqueue(custom, namespace, "refused"), "Ready")
        assert ready is not None
        assert ready["status"] == "False"


def test_a_wrong_redis_password_is_an_authentication_failure_not_unreachable(
    default_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    ns = operator_namespace
    server = RedisServer(tmp_path / "redis")
    server.start()
    request_stop = server.stop
    wrong = f"redis://:not-the-password@127.0.0.1:{server.port}/0"
    url_secret(core, ns, "auth-url", wrong)
    document = jobqueue_manifest(
        "auth",
        [{"name": "q", "replicas": 0}],
        broker={"external": {"urlSecretRef": {"name": "auth-url", "key": "url"}}},
    )
    apply_jobqueue(kubectl, ns, document)
    try:
        found = _wait_condition(custom, ns, "auth", "BrokerReady", lambda c: c["reason"] == "BrokerAuthFailed")
        assert "not-the-password" not in found["message"]  # never the password
        started = time.monotonic()
        url_secret(core, ns, "auth-url", server.url)
        _wait_condition(custom, ns, "auth", "BrokerReady", lambda c: c["status"] == "True", timeout=30)
        assert time.monotonic() - started < 15  # the Secret's change is watched, not waited out on a resync
    finally:
        kubectl("delete", "jq", "-n", ns, "auth")
        request_stop()


def _template_hash(apps: client.AppsV1Api, namespace: str, name: str) -> str | None:
    template = apps.read_namespaced_deployment(name, namespace).spec.template
    return (template.metadata.annotations or {}).get("jobqueue.dev/config-hash")


def test_a_changed_broker_secret_rolls_the_workers(
    default_operator: Path,
    kubectl: Kubectl,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    url_secret(core, ns, "roll-url", "redis://10.0.0.1:6379/0")
    document = jobqueue_manifest(
        "roll",
        [{"name": "q", "replicas": 1}],
        broker={"external": {"urlSecretRef": {"name": "roll-url", "key": "url"}}},
    )
    apply_jobqueue(kubectl, ns, document)
    before = wait_until(lambda: _template_hash(apps, ns, "roll-q-worker"), timeout=30, what="the config hash")
    first = wait_until(
        lambda: core.list_namespaced_pod(ns, label_selector="jobqueue.dev/jobqueue=roll").items,
        timeout=30,
        what="a Pod",
    )
    changed_at = time.monotonic()
    url_secret(core, ns, "roll-url", "redis://10.0.0.2:6379/0")
    after = wait_until(
        lambda: (h := _template_hash(apps, ns, "roll-q-worker")) != before and h, timeout=30, what="a new hash"
    )
    assert after != before

    def new_pod() -> bool:
        pods = core.list_namespaced_pod(ns, label_selector="jobqueue.dev/jobqueue=roll").items
        return any(
            p.metadata.uid not in {q.metadata.uid for q in first} and not p.metadata.deletion_timestamp for p in pods
        )

    wait_until(new_pod, timeout=60, what="a worker Pod started after the Secret changed")
    assert time.monotonic() - changed_at < 30
    # An unrelated change to the same Secret (a key the Pods do not read) rolls nothing.
    core.patch_namespaced_secret("roll-url", ns, {"stringData": {"note": "not read by any Pod"}})
    kubectl("annotate", "--overwrite", "-n", ns, "jq/roll", "touch=1")  # a reconcile for sure
    wait_until(lambda: _template_hash(apps, ns, "roll-q-worker") == after, timeout=10, what="the same hash")
    kubectl("delete", "jq", "-n", ns, "roll")


def _replicas_owners(deployment: client.V1Deployment) -> set[str]:
    owners = set()
    for entry in deployment.metadata.managed_fields or []:
        if "f:replicas" in ((entry.fields_v1 or {}).get("f:spec") or {}):
            owners.add(entry.manager)
    return owners


def test_the_reconciler_never_undoes_a_scale(
    default_operator: Path,
    kubectl: Kubectl,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    operator_namespace: str,
    local_cluster: cluster.ClusterState,
) -> None:
    """The autoscaler (paused here, so only this test scales) sets replicas while reconciles run all the
    time: the last scale always wins, replicas belong to the autoscaler's field manager alone, and a
    reconcile after a scale posts no `Updated Deployment`."""
    ns = operator_namespace
    url_secret(core, ns, "race-url", "redis://10.0.0.1:6379/0")
    document = jobqueue_manifest(
        "race",
        [{"name": "q", "autoscaling": {"minReplicas": 0, "maxReplicas": 9}}],
        broker={"external": {"urlSecretRef": {"name": "race-url", "key": "url"}}},
    )
    document["metadata"]["annotations"] = {"jobqueue.dev/autoscaling-paused": "true"}
    apply_jobqueue(kubectl, ns, document)
    name = "race-q-worker"
    wait_until(lambda: _replicas_owners(apps.read_namespaced_deployment(name, ns)) == {"jobqueue-autoscaler"},
               timeout=30, what="replicas handed over to the autoscaler")  # fmt: skip
    autoscaler = operator_kube.Kube(kube_config.new_client_from_config(config_file=local_cluster.kubeconfig))
    stop = threading.Event()
    touches = [0]

    def touch() -> None:  # a reconcile after another (annotation changes trigger one each)
        while not stop.is_set():
            touches[0] += 1
            kubectl("annotate", "--overwrite", "-n", ns, "jq/race", f"touch={touches[0]}")

    toucher = threading.Thread(target=touch)
    toucher.start()
    try:
        for replicas in (3, 1, 4, 0, 2, 5, 2):
            autoscaler.scale(ns, name, replicas)
            seen = touches[0]
            wait_until(lambda seen=seen: touches[0] >= seen + 2, timeout=30, what="two reconciles after the scale")
    finally:
        stop.set()
        toucher.join()
    kubectl("annotate", "--overwrite", "-n", ns, "jq/race", "touch=last")
    wait_until(lambda: get_jobqueue(custom, ns, "race")["status"]["queues"][0].get("desiredReplicas") == 2, timeout=15,
               what="the status to show the last scale")  # fmt: skip
    deployment = apps.read_namespaced_deployment(name, ns)
    assert deployment.spec.replicas == 2
    assert _replicas_owners(deployment) == {"jobqueue-autoscaler"}
    events = core.list_namespaced_event(ns, field_selector="involvedObject.name=race").items
    assert not [e for e in events if e.message == f"Updated Deployment {name}"]
    kubectl("delete", "jq", "-n", ns, "race")


def test_every_pod_the_operator_makes_is_admitted_under_pod_security_restricted(
    kubectl: Kubectl,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    namespace: str,
    tmp_path: Path,
    local_cluster: cluster.ClusterState,
) -> None:
    """A namespace enforcing Pod Security `restricted` on the real API server: Redis, workers, beat and
    Flower are all admitted (none refused with FailedCreate)."""
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    document = jobqueue_manifest(
        "strict", [{"name": "q", "replicas": 1}], beat={"enabled": True}, flower={"enabled": True}
    )
    with host_operator(
        local_cluster.kubeconfig, namespace, tmp_path / "operator.log", cluster_dir=local_cluster.directory
    ):
        apply_jobqueue(kubectl, namespace, document)

        def components() -> set[str]:
            pods = core.list_namespaced_pod(namespace, label_selector="jobqueue.dev/jobqueue=strict").items
            return {p.metadata.labels["app.kubernetes.io/component"] for p in pods}

        wait_until(lambda: components() == {"broker", "worker", "beat", "flower"}, timeout=60, what="every Pod")
        refused = core.list_namespaced_event(namespace, field_selector="reason=FailedCreate").items
        assert not refused, [e.message for e in refused]
        degraded = condition(get_jobqueue(custom, namespace, "strict"), "Degraded") or {}
        assert "Refused" not in degraded.get("reason", "")
        kubectl("delete", "jq", "-n", namespace, "strict", "--wait=true")


def test_the_operators_own_pod_is_admitted_under_pod_security_restricted(
    core: client.CoreV1Api, namespace: str
) -> None:
    """The chart's operator Pod, as `helm template` renders it with its defaults, created (server-side dry
    run) in a namespace enforcing `restricted`: admitted."""
    core.patch_namespace(namespace, {"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})
    flags = ["--kube-version", "1.36.3", "--show-only", "templates/deployment.yaml"]
    rendered = helm("template", "jq", str(CHART), "--namespace", namespace, *flags).stdout
    template = yaml.safe_load(rendered)["spec"]["template"]
    spec = {**template["spec"], "serviceAccountName": "default"}  # the chart's own is not installed here
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "operator-admission"}, "spec": spec}
    core.create_namespaced_pod(namespace, pod, dry_run="All")  # raises 403 with the violations when refused
