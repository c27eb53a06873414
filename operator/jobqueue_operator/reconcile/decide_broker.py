"""PURE: the managed broker's part of a reconcile's plan: whether the operator can read Redis (BrokerReady),
the password rotation's next step (broker_password), whether Redis may restart onto its current template
(broker_restart), and the BrokerUpToDate condition that says both."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobqueue_operator import broker_password, broker_restart, naming, nodes, status
from jobqueue_operator.broker_replication import DEFAULT_MAX_LAG_SECONDS, Members, replica_state
from jobqueue_operator.broker_state import ManagedState
from jobqueue_operator.build import redis
from jobqueue_operator.build.common import Config, Manifest
from jobqueue_operator.events import Event
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason

RESTART_CAUSE = "broker-restart"
"""The cause of the held restart's Warning (events.Event.cause): one Event, its count raised."""


@dataclass(frozen=True)
class ManagedBroker:
    """What one reconcile read of a managed broker."""

    operator_password: str | None = None
    """The operator user's password (`<jq>-redis-operator`); None: that Secret does not exist yet."""
    password: str | None = None
    """The `password` key of `<jq>-redis-auth` (the source of truth), and its `url` key."""
    url: str | None = None
    state: ManagedState | None = None
    """None: Redis was not read (not running) or could not be (`error`)."""
    admin_url: str | None = None
    """The URL the operator logged in with (its own user's, else the Secret's)."""
    error: str | None = None
    auth_failed: bool = False
    missing_secret: bool = False
    """`<jq>-redis-auth` does not exist: this reconcile creates it with `password` and `url`."""
    members: Members | None = None
    """A highly available broker with a member on an older template: one look through the Sentinels (which
    member is master, which replicas are in sync); None otherwise or when it could not be read."""


@dataclass(frozen=True)
class BrokerPlan:
    """The broker writes of a reconcile, in this order: the operator's user, the password step, (the children,)
    the restart."""

    admin_url: str | None
    switch_to_on_delete: bool = False
    """The live StatefulSet updates another way: patch its strategy (`redis.TO_ON_DELETE`) before the apply."""
    secret_password: str | None = None
    """The password of the `<jq>-redis-auth` this reconcile creates (the Pods' config hash already has it)."""
    operator_secret_for: JobQueue | None = None
    """The operator user's Secret is missing: create it for this JobQueue (once)."""
    ensure_operator_user: str | None = None
    """Give the operator's user this password (logged in with the Secret's URL: the user is missing)."""
    password: broker_password.Step = field(default_factory=broker_password.Step)
    restart: broker_restart.Verdict | None = None
    up_to_date: status.Verdict | None = None
    events: Sequence[Event] = ()
    """Warnings of the plan itself (a held restart); each write's Events are posted once it is done."""


def wanted_url(jq: JobQueue, managed: ManagedBroker) -> str | None:
    """The URL the Secret's `url` key should hold: the one for its `password` key."""
    return None if not managed.password else redis.client_url(jq, managed.password)


def pod_config(jq: JobQueue, managed: ManagedBroker | None, config: Config) -> Config:
    """The configuration the Pods should read, so their config hash is right in the same reconcile: the
    Secret as this reconcile creates it (else the Pods made with it would roll once at the next), or with
    its `url` as rotation step 2 rewrites it, once Redis accepts the Secret's password (the Pods roll)."""
    key = ("Secret", naming.redis_secret(jq.name))
    if managed is not None and managed.missing_secret and managed.password and managed.url:
        created = redis.secret(jq, managed.password)["stringData"]
        return {**config, key: {k: base64.b64encode(v.encode()).decode() for k, v in created.items()}}
    if managed is None or managed.state is None or not managed.password:
        return config
    url = wanted_url(jq, managed)
    if url is None or url == managed.url or broker_password.digest(managed.password) not in managed.state.accepted:
        return config
    data = dict(config.get(key) or {})
    data[naming.URL_KEY] = base64.b64encode(url.encode()).decode()
    return {**config, key: data}


def stale_pods(pods: Sequence[Manifest], desired: Sequence[Manifest]) -> list[str]:
    """Pods of the JobQueue (not Redis) whose config hash is not their Deployment's desired one: they run
    with older Secret values, maybe an older broker password."""
    wanted: dict[tuple[str | None, str | None], str | None] = {}
    for manifest in desired:
        if manifest["kind"] != "Deployment":
            continue
        template = manifest["spec"]["template"]["metadata"]
        labels = template.get("labels") or {}
        key = (labels.get(naming.COMPONENT_LABEL), labels.get(naming.QUEUE_LABEL))
        wanted[key] = (template.get("annotations") or {}).get(naming.CONFIG_HASH_ANNOTATION)
    stale = []
    for pod in pods:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        if labels.get(naming.COMPONENT_LABEL) in (naming.BROKER, naming.SENTINEL):  # rotated in place
            continue
        if (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed"):
            continue
        have = (metadata.get("annotations") or {}).get(naming.CONFIG_HASH_ANNOTATION)
        key = (labels.get(naming.COMPONENT_LABEL), labels.get(naming.QUEUE_LABEL))
        if have is None or wanted.get(key) != have:
            stale.append(str(metadata.get("name")))
    return stale


def probe_reads_password(pod: Mapping[str, Any] | None) -> bool:
    """The running Redis's readiness probe logs in with the password it started with (made before the
    operator had its own user): dropping that password would make Redis unready."""
    for container in ((pod or {}).get("spec") or {}).get("containers") or []:
        command = ((container.get("readinessProbe") or {}).get("exec") or {}).get("command") or []
        if any(f"${redis.PASSWORD_ENV}" in str(part) for part in command):
            return True
    return False


def lost_readiness(pod: Mapping[str, Any] | None) -> bool:
    """The Redis Pod was ready since its container started and is not any more (it stopped answering its
    probe: frozen, overloaded), as opposed to starting: its Ready condition turned False after the start."""
    observed = (pod or {}).get("status") or {}
    ready = next((c for c in observed.get("conditions") or [] if c.get("type") == "Ready"), None)
    started = [
        str(s["state"]["running"].get("startedAt") or "")
        for s in observed.get("containerStatuses") or []
        if "running" in (s.get("state") or {})
    ]
    if ready is None or ready.get("status") != "False" or not started:
        return False
    return str(ready.get("lastTransitionTime") or "") > max(started)


def node_lost_message(jq: JobQueue, pod: str, node: str, why: str) -> str:
    """What BrokerReady says of a managed Redis whose node is gone: that Kubernetes will not start it
    elsewhere by itself, and the one step a person takes (docs/operator.md, "A lost node")."""
    persistence = jq.spec.broker.managed is not None and jq.spec.broker.managed.persistence.enabled
    kept = (
        "its new Pod reloads the append-only file from its volume (a node-local volume can only come back "
        "with its node)"
        if persistence
        else "without persistence the tasks it held in memory are lost, and it starts empty"
    )
    return (
        f"Redis Pod {pod} is on node {node}, which is gone ({why}): Kubernetes does not start a StatefulSet "
        f"Pod elsewhere while its node may still run it. Once the machine is known to be off: kubectl taint "
        f"nodes {node} {nodes.OUT_OF_SERVICE_TAINT}=nodeshutdown:NoExecute (or kubectl delete pod {pod} -n "
        f"{jq.namespace} --force --grace-period=0); {kept}"
    )


def broker_state(
    jq: JobQueue,
    managed: ManagedBroker,
    ready: status.BrokerState,
    pod: Mapping[str, Any] | None = None,
    node_lost: str | None = None,
) -> status.BrokerState:
    """BrokerReady of a managed broker: its StatefulSet's state (`ready`), then whether the operator can
    read Redis: a Redis that refuses every credential or does not answer is not ready, whatever its Pod
    says; one that stopped answering after it was ready is unreachable, not starting; one that cannot be
    read while its Pod's node is gone (`node_lost`: why, `nodes.gone`) waits for a person (BrokerNodeLost)."""
    node = nodes.node_of(pod or {})
    if node_lost is not None and node and managed.state is None:
        name = str(((pod or {}).get("metadata") or {}).get("name") or f"{naming.redis(jq.name)}-0")
        return status.BrokerState(False, Reason.BROKER_NODE_LOST, node_lost_message(jq, name, node, node_lost))
    if managed.error is None:
        return ready
    if not ready.ready and not (ready.reason == Reason.REDIS_STARTING and lost_readiness(pod)):
        return ready
    secret = naming.redis_secret(jq.name)
    if managed.auth_failed:
        message = (
            f"Redis refuses the operator's own user and the password of Secret {secret} ({managed.error}): put "
            f"the previous password back into the Secret's password key, or restart Redis onto it, losing the "
            f"tasks it holds (kubectl annotate jq {jq.name} {naming.RESTART_BROKER_ANNOTATION}=true)"
        )
        return status.BrokerState(False, Reason.BROKER_AUTH_FAILED, message)
    return status.BrokerState(False, Reason.BROKER_UNREACHABLE, f"Redis does not answer: {managed.error}")


def plan(
    jq: JobQueue,
    managed: ManagedBroker,
    children: Mapping[tuple[str, str], Manifest],
    pods: Sequence[Manifest],
    desired: Sequence[Manifest],
    asked: bool,
) -> BrokerPlan:
    """The broker's writes and condition. `desired`: the children this reconcile applies (their config
    hashes); `asked`: the JobQueue carries the restart annotation."""
    pod = broker_restart.broker_pod(pods, jq.name)
    state = managed.state
    statefulset = children.get(("StatefulSet", naming.redis(jq.name)))
    strategy = (((statefulset or {}).get("spec") or {}).get("updateStrategy") or {}).get("type")
    restart = (
        _roll_members(jq, statefulset, pods, managed.members)
        if redis.high_availability(jq)
        else broker_restart.decide(
            jq.name,
            statefulset,
            pod,
            None if state is None else state.held,
            state is not None and state.aof,
            managed.error or "Redis is not running",
            asked,
        )
    )
    step = broker_password.Step()
    url = wanted_url(jq, managed)
    if state is not None and managed.password and url is not None:
        step = broker_password.decide(
            naming.redis_secret(jq.name),
            managed.password,
            managed.url,
            url,
            state.accepted,
            stale_pods(pods, desired),
            probe_reads_password(pod),
            state.accepted_somewhere,
        )
    ensure = managed.operator_password if state is not None and not state.as_operator else None
    events: list[Event] = []
    if restart.reason == Reason.BROKER_RESTART_HELD:
        events.append(Event("Warning", Reason.BROKER_RESTART_HELD, restart.message, cause=RESTART_CAUSE))
    return BrokerPlan(
        admin_url=managed.admin_url,
        switch_to_on_delete=statefulset is not None and strategy != redis.UPDATE_STRATEGY,
        secret_password=managed.password if managed.missing_secret else None,
        operator_secret_for=jq if managed.operator_password is None else None,
        ensure_operator_user=ensure,
        password=step,
        restart=restart,
        up_to_date=_up_to_date(restart, step),
        events=events,
    )


def _roll_members(
    jq: JobQueue, statefulset: Manifest | None, pods: Sequence[Manifest], members: Members | None
) -> broker_restart.Verdict:
    """`broker_restart.roll_members` with what the look through the Sentinels found."""
    if members is None or members.master is None or members.master_problem:
        why = "the broker was not read through the Sentinels" if members is None else members.master_problem
        master, unreadable, in_sync = None, why or "no Sentinel names a master (BrokerAvailable says more)", 0
    else:
        master, unreadable = members.master, ""
        lag = members.max_lag_seconds if members.max_lag_seconds is not None else DEFAULT_MAX_LAG_SECONDS
        in_sync = sum(1 for replica in members.replicas if replica_state(replica, lag) == "in_sync")
    return broker_restart.roll_members(jq.name, statefulset, pods, master, in_sync, unreadable)


def _up_to_date(restart: broker_restart.Verdict, step: broker_password.Step) -> status.Verdict:
    if step.rotating is None:
        return ("True" if restart.up_to_date else "False", restart.reason, restart.message)
    if restart.up_to_date:
        return ("False", Reason.BROKER_PASSWORD_ROTATING, step.rotating)
    return ("False", restart.reason, f"{restart.message}; {step.rotating}")
