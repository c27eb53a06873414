"""A highly available managed broker on the local cluster: the operator's objects come up, the members find
their places by themselves (the first member master, two replicas in sync), the workers consume through the
Sentinels, and when the master's Pod is deleted the Sentinels promote a replica, the workers go on, and the
deleted member comes back as a replica.

The operator runs on the host (`hosted_operator_in`); the test reaches the members and the Sentinels at their
Pod IPs, as the host can, and names the master the way the Sentinels do (its Pod's DNS name).
"""

from __future__ import annotations

import base64
import contextlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import SENTINEL_MEMBERS
from jobqueue_worker import producer
from jobqueue_worker.contract import SENTINEL_MASTER_NAME
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, hosted_operator_in, jobqueue_manifest
from tests.integration.operator.sentinel_pods import agreed_master, ready_pods

NAME = "ha"
QUEUE = "work"

pytestmark = pytest.mark.timeout(900)
"""The waits' own budgets (Pods of three members starting one after another, a failover, a roll) add up to
more than the suite's 300 s, which also counts the module's fixtures (the hosted operator, and the session's
cluster when this module comes first): a slow but healthy run was cut at 300 s, without evidence."""


@pytest.fixture(scope="module")
def hosted_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    with hosted_operator_in(local_cluster, operator_namespace, tmp_path_factory) as running:
        yield running.log


def _evidence(core: client.CoreV1Api, namespace: str, log: Path) -> str:
    """What a failed wait needs to be understood afterwards: every Pod (node, phase, readiness, each container's
    state and restarts), the namespace's Events, the last lines of each Redis and Sentinel container, and the
    operator's log tail."""
    lines = ["--- Pods"]
    pods = core.list_namespaced_pod(namespace).items
    for pod in pods:
        ready = next((c.status for c in pod.status.conditions or [] if c.type == "Ready"), "?")
        states = [
            f"{c.name}: {next(k for k, v in c.state.to_dict().items() if v)} restarts={c.restart_count}"
            for c in pod.status.container_statuses or []
        ]
        lines.append(f"{pod.metadata.name} node={pod.spec.node_name} phase={pod.status.phase} ready={ready} {states}")
    lines.append("--- Events")
    events = sorted(core.list_namespaced_event(namespace).items, key=lambda e: str(e.last_timestamp or e.event_time))
    lines += [f"{e.last_timestamp} {e.involved_object.name} {e.reason} x{e.count}: {e.message}" for e in events[-60:]]
    for pod in pods:
        if (pod.metadata.labels or {}).get(naming.COMPONENT_LABEL) in (naming.BROKER, naming.SENTINEL):
            try:
                tail = core.read_namespaced_pod_log(pod.metadata.name, namespace, tail_lines=25)
            except client.ApiException as exc:
                tail = f"(no log: {exc.status} {exc.reason})"
            lines += [f"--- log {pod.metadata.name}", tail]
    lines += ["--- operator log", "\n".join(log.read_text(errors="replace").splitlines()[-60:])]
    return "\n".join(lines)


@contextlib.contextmanager
def explained(core: client.CoreV1Api, namespace: str, log: Path) -> Iterator[None]:
    """A failure inside the block prints the evidence first (pytest shows it with the failure)."""
    try:
        yield
    except BaseException:
        print(_evidence(core, namespace, log))
        raise


def _ready_pods(core: client.CoreV1Api, namespace: str, component: str, name: str = NAME) -> dict[str, str] | None:
    return ready_pods(core, namespace, component, name)


def _replicas_online(ip: str, password: str) -> int:
    info: dict[str, Any] = redis.Redis(ip, redis_build.PORT, password=password, socket_timeout=3).info("replication")
    if info.get("role") != "master":
        return -1
    return sum(1 for key, value in info.items() if key.startswith("slave") and value.get("state") == "online")


def test_a_highly_available_broker_replicates_and_survives_the_loss_of_its_master(
    hosted_operator: Path, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str
) -> None:
    with explained(core, operator_namespace, hosted_operator):
        _replicates_and_survives_the_loss_of_its_master(custom, core, operator_namespace)


def _replicates_and_survives_the_loss_of_its_master(
    custom: client.CustomObjectsApi, core: client.CoreV1Api, ns: str
) -> None:
    queues = [{"name": QUEUE, "concurrency": 2, "pool": "threads", "replicas": 1, "timeLimitSeconds": 10}]
    broker = {"managed": {"persistence": {"enabled": False}, "highAvailability": {"enabled": True}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, jobqueue_manifest(NAME, queues, broker=broker))

    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=240, what="3 ready Redis members")
    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL), timeout=120, what="3 ready Sentinels")
    secret = core.read_namespaced_secret(naming.redis_secret(NAME), ns).data
    password = base64.b64decode(secret[naming.PASSWORD_KEY]).decode()
    every_sentinel = [f"sentinel://:{password}@ha-sentinel-{n}.ha-sentinel-headless.{ns}.svc:26379/0" for n in range(3)]
    assert base64.b64decode(secret[naming.URL_KEY]).decode() == ";".join(every_sentinel)

    first = f"{naming.redis(NAME)}-0"
    assert wait_until(lambda: agreed_master(sentinels, password), timeout=60, what="the Sentinels agree") == first
    wait_until(
        lambda: _replicas_online(members[first], password) == SENTINEL_MEMBERS - 1,
        timeout=120,
        what="INFO replication on the master shows 2 replicas online",
    )

    def consumed(master_ip: str) -> None:
        app = producer.producer_app(f"redis://:{password}@{master_ip}:{redis_build.PORT}/0")
        run_id = uuid.uuid4().hex
        producer.send(app, QUEUE, "noop", 3, run_id=run_id)
        wait_until(lambda: producer.done_count(app, run_id) == 3, timeout=120, what="3 tasks done by the workers")

    consumed(members[first])

    deleted_at = time.monotonic()
    core.delete_namespaced_pod(first, ns, grace_period_seconds=0)
    promoted = wait_until(
        lambda: (found := agreed_master(sentinels, password)) not in (None, first) and found,
        timeout=30,
        what="the Sentinels promote another member",
    )
    print(f"master {first} deleted; {promoted} promoted after {time.monotonic() - deleted_at:.1f} s")
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER), timeout=180, what="3 ready members again")
    consumed(members[str(promoted)])  # the workers moved to the new master by themselves
    wait_until(
        lambda: _replicas_online(members[str(promoted)], password) == SENTINEL_MEMBERS - 1,
        timeout=120,
        what=f"{first} back as a replica of {promoted}",
    )


def _accepts(ip: str, port: int, password: str) -> bool:
    try:
        return bool(redis.Redis(ip, port, password=password, socket_timeout=3).ping())
    except redis.AuthenticationError:
        return False


def _event(core: client.CoreV1Api, namespace: str, name: str, reason: str, text: str = "") -> str:
    """The message of an Event of `reason` on the JobQueue that contains `text` (waited for)."""

    def probe() -> str | None:
        listed = core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name},reason={reason}")
        return next((e.message for e in listed.items if text in (e.message or "")), None)

    return wait_until(probe, timeout=180, what=f"a {reason} Event on {name} saying {text!r}")


def _condition(custom: client.CustomObjectsApi, namespace: str, name: str, type_: str) -> dict[str, Any] | None:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    return next((c for c in (body.get("status") or {}).get("conditions") or [] if c["type"] == type_), None)


def test_a_password_rotation_reaches_every_member_and_sentinel_while_the_workers_go_on(
    hosted_operator: Path, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str
) -> None:
    with explained(core, operator_namespace, hosted_operator):
        _rotation(custom, core, operator_namespace)


def _rotation(custom: client.CustomObjectsApi, core: client.CoreV1Api, ns: str) -> None:
    """A user puts a new password into `<jq>-redis-auth` of a highly available broker: the operator, reading the
    broker through the Sentinels as its own user, adds it on all six instances, rolls the workers onto the new
    `sentinel://` URL, then drops the old one everywhere. No member or Sentinel restarts, replication and the
    Sentinels' monitoring go on (they log in as the operator's user), every task runs, and the old password is
    refused by every member and Sentinel afterwards. BrokerAvailable, read through the Sentinels, says the
    broker is replicated (before the operator read the managed broker through Sentinel, it was never set)."""
    name = "harot"
    queues = [{"name": QUEUE, "concurrency": 2, "pool": "threads", "replicas": 1, "timeLimitSeconds": 10}]
    broker = {"managed": {"persistence": {"enabled": False}, "highAvailability": {"enabled": True}}}
    custom.create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, jobqueue_manifest(name, queues, broker=broker))
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER, name), timeout=300, what="3 ready members")
    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL, name), timeout=120, what="3 ready Sentinels")
    secret = naming.redis_secret(name)
    old = base64.b64decode(core.read_namespaced_secret(secret, ns).data[naming.PASSWORD_KEY]).decode()
    master = wait_until(lambda: agreed_master(sentinels, old), timeout=60, what="the Sentinels agree")
    wait_until(
        lambda: _replicas_online(members[master], old) == SENTINEL_MEMBERS - 1, timeout=120, what="2 replicas online"
    )
    available = wait_until(
        lambda: (found := _condition(custom, ns, name, "BrokerAvailable")) and found["status"] == "True" and found,
        timeout=120,
        what="BrokerAvailable True, read through the Sentinels",
    )
    assert available["reason"] == "BrokerReplicated"
    assert f"{master}." in available["message"]
    uids = {
        p.metadata.name: p.metadata.uid
        for p in core.list_namespaced_pod(ns, label_selector=f"{naming.JOBQUEUE_LABEL}={name}").items
    }

    def consumed(password: str, count: int = 3) -> None:
        app = producer.producer_app(f"redis://:{password}@{members[master]}:{redis_build.PORT}/0")
        run_id = uuid.uuid4().hex
        producer.send(app, QUEUE, "noop", count, run_id=run_id)
        wait_until(lambda: producer.done_count(app, run_id) == count, timeout=180, what=f"{count} tasks done")

    consumed(old)
    new = uuid.uuid4().hex
    core.patch_namespaced_secret(secret, ns, {"stringData": {"password": new}})  # what a user does
    _event(core, ns, name, "BrokerPasswordRotating", "accepts it now")
    rotated = _event(core, ns, name, "BrokerPasswordRotated", secret)
    assert "no longer accepts the old one" in rotated
    url = base64.b64decode(core.read_namespaced_secret(secret, ns).data[naming.URL_KEY]).decode()
    assert url.startswith(f"sentinel://:{new}@")

    everyone = [(ip, redis_build.PORT) for ip in members.values()] + [
        (ip, redis_build.SENTINEL_PORT) for ip in sentinels.values()
    ]
    assert [_accepts(ip, port, old) for ip, port in everyone] == [False] * 6
    assert [_accepts(ip, port, new) for ip, port in everyone] == [True] * 6
    assert agreed_master(sentinels, new) == master  # no failover: the Sentinels never lost sight of the master
    assert _replicas_online(members[master], new) == SENTINEL_MEMBERS - 1
    consumed(new)  # the workers rolled onto the new URL and consume
    after = {
        p.metadata.name: p.metadata.uid
        for p in core.list_namespaced_pod(ns, label_selector=f"{naming.JOBQUEUE_LABEL}={name}").items
    }
    for pod in [*members, *sentinels]:
        assert after[pod] == uids[pod], f"{pod} restarted"
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)


def test_a_template_change_rolls_the_replicas_one_at_a_time_and_the_master_after_a_hand_over(
    hosted_operator: Path, custom: client.CustomObjectsApi, core: client.CoreV1Api, operator_namespace: str
) -> None:
    with explained(core, operator_namespace, hosted_operator):
        _roll(custom, core, operator_namespace)


def _uids(core: client.CoreV1Api, namespace: str, name: str, component: str) -> dict[str, str]:
    selector = f"{naming.JOBQUEUE_LABEL}={name},{naming.COMPONENT_LABEL}={component}"
    return {p.metadata.name: p.metadata.uid for p in core.list_namespaced_pod(namespace, label_selector=selector).items}


def _roll(custom: client.CustomObjectsApi, core: client.CoreV1Api, ns: str) -> None:
    """A resize of a highly available broker: the operator restarts the two replicas (each once every member
    is Ready and in sync), holds the master and says how to hand it over; after `SENTINEL FAILOVER` the old
    master, now a replica, is restarted too. A replicated key survives, no Sentinel restarts."""
    name = "haroll"
    queues = [{"name": QUEUE, "concurrency": 1, "pool": "threads", "replicas": 1}]
    managed = {
        "persistence": {"enabled": False},
        "highAvailability": {"enabled": True},
        "resources": {"limits": {"memory": "256Mi"}},
    }
    custom.create_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, jobqueue_manifest(name, queues, broker={"managed": managed})
    )
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER, name), timeout=300, what="3 ready members")
    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL, name), timeout=120, what="3 ready Sentinels")
    password = base64.b64decode(core.read_namespaced_secret(naming.redis_secret(name), ns).data[naming.PASSWORD_KEY])
    secret = password.decode()
    first = f"{naming.redis(name)}-0"
    assert wait_until(lambda: agreed_master(sentinels, secret), timeout=60, what="the Sentinels agree") == first
    wait_until(lambda: _replicas_online(members[first], secret) == 2, timeout=120, what="2 replicas online")
    master = redis.Redis(members[first], redis_build.PORT, password=secret, socket_timeout=5)
    master.lpush("canary", "acknowledged")
    assert master.wait(2, 5000) == 2
    before = _uids(core, ns, name, naming.BROKER)
    sentinel_uids = _uids(core, ns, name, naming.SENTINEL)

    patch = {"spec": {"broker": {"managed": {"resources": {"limits": {"memory": "320Mi"}}}}}}
    custom.patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, patch)
    replicas = [member for member in before if member != first]

    def replicas_rolled() -> bool:
        now, ready = _uids(core, ns, name, naming.BROKER), _ready_pods(core, ns, naming.BROKER, name) or {}
        return all(now.get(r) not in (None, before[r]) and r in ready for r in replicas) and now[first] == before[first]

    wait_until(replicas_rolled, timeout=420, what="both replicas restarted by the operator, the master not")
    held = wait_until(
        lambda: (
            (found := _condition(custom, ns, name, "BrokerUpToDate"))
            and found["reason"] == "BrokerRestartHeld"
            and found
        ),
        timeout=180,
        what="BrokerUpToDate held for the master's hand-over",
    )
    assert f"{first} is the master" in held["message"]
    restarted = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name},reason=BrokerRestarted")
    assert {r for r in replicas if any(f"Redis Pod {r} deleted" in (e.message or "") for e in restarted.items)} == set(
        replicas
    )

    sentinels = wait_until(lambda: _ready_pods(core, ns, naming.SENTINEL, name), timeout=60, what="Sentinels")
    redis.Redis(next(iter(sentinels.values())), redis_build.SENTINEL_PORT, password=secret).execute_command(  # type: ignore[no-untyped-call]
        "SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME
    )
    promoted = wait_until(
        lambda: (found := agreed_master(sentinels, secret)) not in (None, first) and found,
        timeout=60,
        what="the hand-over",
    )
    wait_until(
        lambda: (
            _uids(core, ns, name, naming.BROKER).get(first) not in (None, before[first])
            and _ready_pods(core, ns, naming.BROKER, name)
        ),
        timeout=300,
        what=f"{first}, now a replica, restarted by the operator",
    )
    done = wait_until(
        lambda: (found := _condition(custom, ns, name, "BrokerUpToDate")) and found["status"] == "True" and found,
        timeout=180,
        what="BrokerUpToDate True",
    )
    assert done["reason"] == "BrokerPodCurrent"
    members = wait_until(lambda: _ready_pods(core, ns, naming.BROKER, name), timeout=60, what="3 ready members")
    wait_until(lambda: _replicas_online(members[str(promoted)], secret) == 2, timeout=120, what="2 replicas online")
    now = redis.Redis(members[str(promoted)], redis_build.PORT, password=secret, socket_timeout=5)
    assert now.lrange("canary", 0, -1) == [b"acknowledged"]
    assert _uids(core, ns, name, naming.SENTINEL) == sentinel_uids
    custom.delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
