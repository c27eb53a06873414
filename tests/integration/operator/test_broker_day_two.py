"""Day-two changes to a managed broker lose nothing and hide nothing, on the real cluster: a resize that would
restart Redis while it holds tasks is held (and said), then done once they are gone; a password a user puts
into `<jq>-redis-auth` is rotated in while tasks flow, none lost or run twice; a broker the operator
cannot read turns BrokerReady False within seconds, managed or external.

The operator runs on the host through `python -m jobqueue_devenv exec` (it reaches `<jq>-redis.<ns>.svc`
like a Pod); the node agent runs the Redis Pod from its image (the redis:7.4 stand-in) and the workers
for real; the test reaches Redis at its Pod IP.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml
from celery import Celery
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.faults import broker_process
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker, broker_memory, naming
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import JobQueue
from jobqueue_worker import producer, records
from tests.conftest import Kubectl
from tests.integration.operator.conftest import (
    GROUP,
    PLURAL,
    VERSION,
    apply_jobqueue,
    get_jobqueue,
    hosted_operator_in,
    jobqueue_manifest,
)

SLEEP = "jobqueue_worker.tasks.sleep"
MIB = 2**20


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` on the host with the default resync (30 s): what is asserted "within seconds"
    must come from the watches and the tick's pokes, not from a resync."""
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory, tick=2, resync=None) as running:
        yield running.log


def _wait_condition(
    custom: client.CustomObjectsApi, namespace: str, name: str, type_: str, check: Any, timeout: float = 90
) -> dict[str, Any]:
    def probe() -> dict[str, Any] | None:
        found = condition(get_jobqueue(custom, namespace, name), type_)
        return found if found is not None and check(found) else None

    return wait_until(probe, timeout=timeout, what=f"{name}'s {type_} condition")


def _event(core: client.CoreV1Api, namespace: str, name: str, reason: str, text: str = "") -> str:
    """The message of an Event of `reason` on the JobQueue that contains `text` (waited for)."""

    def probe() -> str | None:
        listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},reason={reason}")
        return next((e.message for e in listed.items if text in (e.message or "")), None)

    return wait_until(probe, timeout=90, what=f"a {reason} Event on {name} saying {text!r}")


def _secret(core: client.CoreV1Api, namespace: str, name: str, key: str) -> str:
    data = core.read_namespaced_secret(name, namespace).data or {}
    return base64.b64decode(data[key]).decode()


def _redis_pod(core: client.CoreV1Api, namespace: str, name: str, not_uid: str | None = None) -> Any:
    """The Redis Pod once it runs and is ready (a new one if `not_uid`)."""

    def probe() -> Any:
        try:
            pod = core.read_namespaced_pod(f"{name}-redis-0", namespace)
        except client.ApiException:
            return None
        ready = any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])
        fresh = not_uid is None or pod.metadata.uid != not_uid
        return pod if ready and fresh and pod.status.pod_ip else None

    return wait_until(probe, timeout=120, what=f"{name}'s Redis Pod ready")


def _url(pod: Any, password: str) -> str:
    return f"redis://:{password}@{pod.status.pod_ip}:6379/0"


def test_a_resize_is_held_while_redis_holds_tasks_then_done_once_they_are_gone(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns, name = operator_namespace, "resize"
    managed = {"persistence": {"enabled": False}, "resources": {"limits": {"memory": "64Mi"}}}
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, [{"name": "work", "replicas": 0}], broker={"managed": managed}))
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    pod = _redis_pod(core, ns, name)
    url = _url(pod, _secret(core, ns, f"{name}-redis-auth", "password"))
    app = producer.producer_app(url)
    for _ in range(6):
        app.send_task(SLEEP, kwargs={"seconds": 0.1}, queue="work")
    assert redis.Redis.from_url(url).llen("work") == 6

    patch = {"spec": {"broker": {"managed": {"resources": {"limits": {"memory": "128Mi"}}}}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
    held = _wait_condition(
        custom, ns, name, "BrokerUpToDate", lambda c: c["reason"] == "BrokerRestartHeld" and "6 tasks" in c["message"]
    )
    assert held["status"] == "False"
    assert "memory limit 64Mi -> 128Mi" in held["message"]
    assert "jobqueue.dev/restart-broker" in held["message"]
    assert "would lose 6 tasks (6 waiting, 0 in flight, 0 dead letters)" in _event(
        core, ns, name, "BrokerRestartHeld", "6 tasks"
    )
    statefulset = apps.read_namespaced_stateful_set(f"{name}-redis", ns)
    assert statefulset.spec.update_strategy.type == "OnDelete"
    assert statefulset.status.update_revision != pod.metadata.labels["controller-revision-hash"]
    assert core.read_namespaced_pod(f"{name}-redis-0", ns).metadata.uid == pod.metadata.uid  # not restarted
    assert redis.Redis.from_url(url).llen("work") == 6  # nothing lost
    assert condition(get_jobqueue(custom, ns, name), "Ready")["status"] == "True"  # type: ignore[index]

    assert broker.purge_queue(url, broker.QueueKeys("work")) == 6  # the user drops them (or workers run them)
    done = _wait_condition(custom, ns, name, "BrokerUpToDate", lambda c: c["status"] == "True")
    assert done["reason"] == "BrokerPodCurrent"
    restarted = _event(core, ns, name, "BrokerRestarted", "memory limit 64Mi -> 128Mi")
    assert "it holds no task" in restarted
    fresh = _redis_pod(core, ns, name, not_uid=pod.metadata.uid)
    assert fresh.spec.containers[0].resources.limits["memory"] == "128Mi"
    maxmemory = redis.Redis.from_url(_url(fresh, _secret(core, ns, f"{name}-redis-auth", "password"))).config_get(
        "maxmemory"
    )
    assert int(str(maxmemory["maxmemory"])) == int(128 * MIB * broker_memory.MAXMEMORY_SHARE)
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def _config_hashes(core: client.CoreV1Api, namespace: str, name: str) -> set[str]:
    selector = f"jobqueue.dev/jobqueue={name},app.kubernetes.io/component=worker"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    return {(p.metadata.annotations or {}).get("jobqueue.dev/config-hash", "") for p in pods}


def test_a_new_password_in_the_secret_is_rotated_in_while_tasks_flow_and_none_is_lost_or_run_twice(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns, name = operator_namespace, "rotate"
    queue = {"name": "work", "replicas": 1, "concurrency": 2, "pool": "threads", "timeLimitSeconds": 20}
    apply_jobqueue(
        kubectl, ns, jobqueue_manifest(name, [queue], broker={"managed": {"persistence": {"enabled": False}}})
    )
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True", timeout=120)
    pod = _redis_pod(core, ns, name)
    secret = f"{name}-redis-auth"
    old = _secret(core, ns, secret, "password")
    before_hashes = _config_hashes(core, ns, name)
    run = uuid.uuid4().hex
    sent: list[str] = []

    def send(app: Celery, count: int) -> None:
        sent.extend(app.send_task(SLEEP, kwargs={"seconds": 0.2, "run_id": run}, queue="work").id for _ in range(count))

    old_producer = producer.producer_app(_url(pod, old))
    send(old_producer, 5)  # before

    new = uuid.uuid4().hex
    core.patch_namespaced_secret(secret, ns, {"stringData": {"password": new}})  # what a user does
    send(old_producer, 5)  # during: Redis keeps the old password until every Pod runs with the new one
    _event(core, ns, name, "BrokerPasswordRotating", "Redis accepts it now")
    rotated = _event(core, ns, name, "BrokerPasswordRotated", secret)
    assert "no longer accepts the old one" in rotated

    url = _secret(core, ns, secret, "url")
    assert f":{new}@" in url  # rewritten from the password key
    new_producer = producer.producer_app(_url(pod, new))
    send(new_producer, 5)  # after: a producer with the new URL
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(_url(pod, old)).ping()  # a new connection with the old password is refused

    reader = redis.Redis.from_url(_url(pod, new))
    wait_until(lambda: len(records.read(reader, run, records.DONE)) == 15, timeout=120, what="all 15 tasks done")
    assert records.read(reader, run, records.DONE) == dict.fromkeys(sent, 1)  # each exactly once
    assert core.read_namespaced_pod(f"{name}-redis-0", ns).metadata.uid == pod.metadata.uid  # Redis never restarted
    assert _config_hashes(core, ns, name).isdisjoint(before_hashes)  # the workers rolled onto the new URL
    up_to_date = _wait_condition(custom, ns, name, "BrokerUpToDate", lambda c: c["status"] == "True")
    assert up_to_date["reason"] == "BrokerPodCurrent"
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_a_managed_broker_the_operator_cannot_log_in_to_is_not_ready_within_seconds(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    """Someone changes Redis's passwords behind the operator's back (redis-cli, not the Secret), both at
    once: the Pod stays ready, the status must not."""
    ns, name = operator_namespace, "locked"
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, [{"name": "work", "replicas": 0}]))
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    pod = _redis_pod(core, ns, name)
    admin = redis.Redis.from_url(_url(pod, _secret(core, ns, f"{name}-redis-auth", "password")))
    with admin.pipeline(transaction=True) as both:  # at once: one at a time, the operator heals the other
        both.execute_command("ACL", "SETUSER", "default", "resetpass", ">changed-by-hand")  # type: ignore[no-untyped-call]
        both.execute_command("ACL", "SETUSER", "jobqueue-operator", "resetpass", ">changed-by-hand")  # type: ignore[no-untyped-call]
        both.execute()
    refused = _wait_condition(
        custom, ns, name, "BrokerReady", lambda c: c["reason"] == "BrokerAuthFailed", timeout=90
    )  # the tick (every 2 s) fails to log in and pokes a reconcile: no 30 s resync waited out
    assert refused["status"] == "False"
    assert _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "False", timeout=90)
    _event(core, ns, name, "BrokerAuthFailed", f"{name}-redis-auth")
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_an_external_broker_that_stops_is_unreachable_within_seconds_and_back_when_it_returns(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
    tmp_path: Path,
) -> None:
    ns, name = operator_namespace, "outside"
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        body = {"metadata": {"name": f"{name}-url"}, "stringData": {"url": server.url}}
        core.create_namespaced_secret(ns, body)
        external = {"external": {"urlSecretRef": {"name": f"{name}-url", "key": "url"}}}
        apply_jobqueue(kubectl, ns, jobqueue_manifest(name, [{"name": "work", "replicas": 0}], broker=external))
        _wait_condition(custom, ns, name, "BrokerReady", lambda c: c["status"] == "True")
        server.stop()
        _wait_condition(custom, ns, name, "BrokerReady", lambda c: c["reason"] == "BrokerUnreachable", timeout=90)
        server.start()  # the same port and password
        _wait_condition(custom, ns, name, "BrokerReady", lambda c: c["status"] == "True", timeout=90)
    finally:
        server.stop()
        custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def _legacy_children(jq: JobQueue, password: str) -> list[dict[str, Any]]:
    """The managed broker as the operator made it before this version: RollingUpdate, no operator user, a
    readiness probe that logs in with the Secret's password."""
    statefulset = redis_build.statefulset(jq)
    spec = statefulset["spec"]
    del spec["updateStrategy"]
    container = spec["template"]["spec"]["containers"][0]
    at = container["args"].index("--user")
    del container["args"][at : at + 3 + len(redis_build.OPERATOR_PERMISSIONS) + 1]
    container["env"] = container["env"][:1]
    ping = f'redis-cli -p 6379 -a "${redis_build.PASSWORD_ENV}" --no-auth-warning ping | grep -q PONG'
    container["readinessProbe"]["exec"]["command"] = ["sh", "-c", ping]
    return [redis_build.secret(jq, password), redis_build.service(jq), statefulset]


def test_a_broker_made_by_an_earlier_operator_is_switched_to_on_delete_without_a_restart(
    local_cluster: cluster.ClusterState,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
    crd: None,
    tmp_path: Path,
) -> None:
    """The upgrade path: the earlier operator's StatefulSet (RollingUpdate) and Redis holding tasks, then
    this operator starts. Nothing restarts while the tasks wait; the operator reads Redis with the
    Secret's URL and gives it its own user at run time; once the tasks are gone Redis restarts onto the
    current template."""
    ns, name = f"jqlegacy-{uuid.uuid4().hex[:8]}", "legacy"
    core.create_namespace({"metadata": {"name": ns}})
    wait_until(lambda: core.read_namespaced_service_account("default", ns), timeout=30, what="default SA")
    try:
        document = jobqueue_manifest(name, [{"name": "work", "replicas": 0}])
        body = custom.create_namespaced_custom_object(
            GROUP, VERSION, ns, PLURAL, {**document, "metadata": {"name": name}}
        )
        jq = JobQueue.from_body(body)
        password = uuid.uuid4().hex
        for child in _legacy_children(jq, password):
            kubectl(
                "apply",
                "--server-side",
                "--field-manager",
                naming.FIELD_MANAGER,
                "-n",
                ns,
                "-f",
                "-",
                input=yaml.safe_dump(child),
            )
        pod = _redis_pod(core, ns, name)
        url = _url(pod, password)
        app = producer.producer_app(url)
        for _ in range(3):
            app.send_task(SLEEP, kwargs={"seconds": 0.1}, queue="work")

        log = tmp_path / "operator.log"
        with host_operator(local_cluster.kubeconfig, ns, log, cluster_dir=local_cluster.directory):
            held = _wait_condition(
                custom, ns, name, "BrokerUpToDate", lambda c: c["reason"] == "BrokerRestartHeld", timeout=120
            )
            assert "3 tasks" in held["message"]
            assert apps.read_namespaced_stateful_set(f"{name}-redis", ns).spec.update_strategy.type == "OnDelete"
            assert core.read_namespaced_pod(f"{name}-redis-0", ns).metadata.uid == pod.metadata.uid
            assert redis.Redis.from_url(url).llen("work") == 3
            users = redis.Redis.from_url(url).acl_users()
            assert "jobqueue-operator" in {u.decode() if isinstance(u, bytes) else u for u in users}
            wait_until(
                lambda: get_jobqueue(custom, ns, name).get("status", {}).get("backlog") == 3,
                timeout=60,
                what="backlog 3",
            )

            broker.purge_queue(url, broker.QueueKeys("work"))
            fresh = _redis_pod(core, ns, name, not_uid=pod.metadata.uid)
            assert "--user" in fresh.spec.containers[0].args
            _wait_condition(custom, ns, name, "BrokerUpToDate", lambda c: c["status"] == "True")
            _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    finally:
        core.delete_namespace(ns)


def test_a_managed_redis_that_stops_answering_is_unreachable_within_seconds_not_starting(
    hosted_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    """A frozen Redis (SIGSTOP: as behind a partition): its Pod turns unready a probe period later, but it
    is not "starting": BrokerReady says it does not answer, and comes back when it does."""
    ns, name = operator_namespace, "frozen"
    apply_jobqueue(kubectl, ns, jobqueue_manifest(name, [{"name": "work", "replicas": 0}]))
    _wait_condition(custom, ns, name, "Ready", lambda c: c["status"] == "True")
    pod = _redis_pod(core, ns, name)
    with broker_process.frozen(_url(pod, "unused")):
        found = _wait_condition(
            custom, ns, name, "BrokerReady", lambda c: c["reason"] == "BrokerUnreachable", timeout=90
        )
        assert found["status"] == "False"
        wait_until(  # still so once the Pod itself is unready (not RedisStarting)
            lambda: (
                not any(
                    c.type == "Ready" and c.status == "True"
                    for c in core.read_namespaced_pod(f"{name}-redis-0", ns).status.conditions or []
                )
            ),
            timeout=60,
            what="the frozen Redis Pod unready",
        )
        assert condition(get_jobqueue(custom, ns, name), "BrokerReady")["reason"] == "BrokerUnreachable"  # type: ignore[index]
    _wait_condition(custom, ns, name, "BrokerReady", lambda c: c["status"] == "True", timeout=60)
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
