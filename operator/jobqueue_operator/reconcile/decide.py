"""PURE: from what one reconcile observed, what to write: children to apply and delete, replicas the
autoscaler takes over, the status, the Events, and whether to come back soon.

Replicas: a worker Deployment is created with its initial replicas; once its queue is autoscaled and the
Deployment exists, the manifest leaves `replicas` out and the autoscaler's field manager owns the field
(taken over first, with the live value, where it does not own it yet), so the reconciler can never undo a
scale, and a resync after a scale changes nothing.

A queue removed from the spec keeps its worker Deployment while its broker queue still holds tasks (its
workers drain it; at least one is kept running); the Deployment, and its PodDisruptionBudget with it, is
deleted once the queue is empty.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue_operator import broker_restart, causes, naming, status
from jobqueue_operator.build import children, drift, workers
from jobqueue_operator.build.common import Config, Manifest, broker_url_ref
from jobqueue_operator.events import Event
from jobqueue_operator.models import Condition, DrainingQueue, JobQueue, JobQueueStatus, Queue
from jobqueue_operator.reasons import Reason
from jobqueue_operator.reconcile import broker_mode, decide_broker
from jobqueue_operator.reconcile.decide_broker import BrokerPlan, ManagedBroker
from jobqueue_worker import contract

Key = tuple[str, str]


@dataclass(frozen=True)
class ExternalBroker:
    """What the external broker's Secret held and how the broker answered."""

    missing: str | None = None
    """Why there is no URL (the Secret or its key does not exist)."""
    error: str | None = None
    auth_failed: bool = False


@dataclass(frozen=True)
class World:
    body: Mapping[str, Any]
    jq: JobQueue | None
    invalid: str | None = None
    """Why the spec cannot be run (the schema let it through, the models do not)."""
    children: Mapping[Key, Manifest] = field(default_factory=dict)
    pods: Sequence[Manifest] = ()
    config: Config = field(default_factory=dict)
    external: ExternalBroker | None = None
    broker_refusals: Sequence[Manifest] = ()
    """FailedCreate Events of the managed Redis StatefulSet, read while it has no Pod."""
    leftovers: Mapping[str, int | None] = field(default_factory=dict)
    """Worker Deployments of queues no longer in the spec -> tasks their queue still holds (None: unknown)."""
    managed: ManagedBroker | None = None
    """The managed broker as the operator logged in to it (None: an external broker)."""
    broker_node_lost: str | None = None
    """Why the managed Redis Pod's node is gone (`nodes.gone`), read while Redis cannot be; None: not gone."""


@dataclass(frozen=True)
class Plan:
    namespace: str
    name: str
    body: Mapping[str, Any]
    observation: status.Observation
    status: JobQueueStatus
    password_secret_for: JobQueue | None = None
    """The managed broker's password Secret is missing: create it for this JobQueue (once)."""
    take_replicas: Sequence[tuple[str, int]] = ()
    """Worker Deployments whose replicas the autoscaler's field manager sets (takes over) before the apply."""
    apply: Sequence[Manifest] = ()
    existing: Mapping[Key, Manifest] = field(default_factory=dict)
    delete: Sequence[tuple[str, str, str]] = ()
    """(apiVersion, kind, name) of children to delete."""
    events: Sequence[Event] = ()
    converged: bool = True
    """False: come back soon (something is starting or failing), not only at the next resync."""
    references: frozenset[tuple[str, str]] = frozenset()
    """The Secrets and ConfigMaps the Pods read: a change to one of them calls for a reconcile."""
    pods: Sequence[Manifest] = ()
    """The JobQueue's Pods as observed (the runtime counts worker restarts from them)."""
    broker: BrokerPlan | None = None
    """The managed broker's writes: its operator user, the password rotation's step, a restart."""


def owns_replicas(deployment: Mapping[str, Any], manager: str) -> bool:
    """Whether `manager` owns (alone or with others) a Deployment's spec.replicas, from its managedFields."""
    for entry in (deployment.get("metadata") or {}).get("managedFields") or []:
        fields = ((entry.get("fieldsV1") or {}).get("f:spec") or {}) if entry.get("manager") == manager else {}
        if "f:replicas" in fields:
            return True
    return False


def _previous_conditions(body: Mapping[str, Any]) -> list[Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    return [Condition.model_validate(item) for item in raw]


def invalid(world: World, previous: Sequence[Condition], now: str) -> Plan:
    """The plan for a spec the schema let through but the operator cannot run: report it, touch nothing."""
    metadata = world.body.get("metadata") or {}
    message = world.invalid or "the spec is invalid"
    observation = status.Observation(
        generation=int(metadata.get("generation", 0)),
        broker=status.BrokerState(False, Reason.INVALID_SPEC, message),
        queues=(),
        problems=(status.Problem(Reason.INVALID_SPEC, message),),
    )
    return Plan(
        namespace=str(metadata.get("namespace", "")),
        name=str(metadata.get("name", "")),
        body=world.body,
        observation=observation,
        status=status.compute(observation, previous, now),
        events=[Event("Warning", Reason.INVALID_SPEC, message)],
        converged=True,  # nothing to retry until the spec changes
    )


def _pods_of(world: World, component: str, queue: str | None = None) -> list[Manifest]:
    """The Pods of a component (of one queue, by its real name)."""

    def matches(pod: Manifest) -> bool:
        metadata = pod.get("metadata") or {}
        labels = metadata.get("labels") or {}
        return labels.get(naming.COMPONENT_LABEL) == component and (queue is None or naming.queue_of(metadata) == queue)

    return [pod for pod in world.pods if matches(pod)]


def _broker_state(world: World, jq: JobQueue) -> status.BrokerState:
    external = world.external
    if external is not None:
        if external.missing is not None:
            return status.BrokerState(False, Reason.BROKER_SECRET_MISSING, external.missing)
        if external.error is not None:
            reason = Reason.BROKER_AUTH_FAILED if external.auth_failed else Reason.BROKER_UNREACHABLE
            return status.BrokerState(False, reason, external.error)
        return status.BrokerState(True, Reason.BROKER_REACHABLE, "the external broker answers PING")
    name = naming.redis(jq.name)
    statefulset = world.children.get(("StatefulSet", name))
    if int(((statefulset or {}).get("status") or {}).get("readyReplicas") or 0) >= 1:
        return status.BrokerState(True, Reason.REDIS_READY, f"StatefulSet {name} is ready")
    cause = causes.first(
        [causes.failed_create(world.broker_refusals), *(causes.pod(p) for p in _pods_of(world, naming.BROKER))]
    )
    if cause is None:
        return status.BrokerState(False, Reason.REDIS_STARTING, f"StatefulSet {name} has no ready Pod yet")
    reason = Reason.REDIS_PODS_REFUSED if cause.kind == "refused" else Reason.REDIS_FAILING
    return status.BrokerState(False, reason, f"StatefulSet {name}: {cause.message}")


def _queue_observation(world: World, queue: Queue, deployment: str) -> status.QueueObservation:
    queue_name = queue.name
    live = world.children.get(("Deployment", deployment))
    if live is None:  # created by this reconcile: it wants its initial replicas, none exists yet
        return status.QueueObservation(name=queue_name, deployment=deployment, desired=workers.initial_replicas(queue))
    observed = live.get("status") or {}
    stalled = any(
        c.get("type") == "Progressing" and c.get("status") == "False" for c in observed.get("conditions") or []
    )
    cause = causes.first(
        [causes.deployment(live), *(causes.pod(p) for p in _pods_of(world, naming.WORKER, queue_name))]
    )
    desired, current, ready = status.deployment_replicas(live)
    return status.QueueObservation(
        name=queue_name,
        deployment=deployment,
        desired=desired,
        replicas=current,
        ready=ready,
        available=int(observed.get("availableReplicas") or 0),
        stalled=stalled,
        cause=cause,
    )


def _missing_config(world: World, jq: JobQueue) -> list[status.Problem]:
    problems = []
    results = jq.spec.results.backend_secret_ref
    broker_secret = ("Secret", broker_url_ref(jq)[0])  # its absence is the broker's state, reported there
    for (kind, name), data in world.config.items():
        if data is not None or (kind, name) == broker_secret:
            continue
        if results is not None and (kind, name) == ("Secret", results.name):
            problems.append(
                status.Problem(
                    Reason.RESULT_BACKEND_SECRET_MISSING, f"Secret {name} with key {results.key} does not exist"
                )
            )
        elif not _optional(jq, kind, name):
            problems.append(status.Problem(Reason.CONFIG_MISSING, f"{kind} {name}, read by the Pods, does not exist"))
    return problems


def _reported_by_workers(body: Mapping[str, Any]) -> list[status.Problem]:
    """What the workers report that keeps the JobQueue from working, as the tick wrote it in the status
    (ResultBackendReady False: results are not stored): Ready and Degraded say it too."""
    for condition in _previous_conditions(body):
        if condition.type == status.RESULT_BACKEND_READY and condition.status == "False":
            return [status.Problem(condition.reason or Reason.RESULT_BACKEND_UNREACHABLE, condition.message or "")]
    return []


BROKER_MEMBERS_STOP_SERVICE: Final = frozenset({Reason.BROKER_WRITES_REFUSED})
"""BrokerAvailable reasons that stop the service while the broker still answers PING (so BrokerReady stays
True): Ready and Degraded say them. Its other False reasons either leave the service running (too few
members in sync, no failover possible: Degraded only) or make BrokerReady False already (no master)."""
BROKER_MEMBERS_DEGRADE: Final = frozenset({Reason.BROKER_UNDER_REPLICATED, Reason.BROKER_QUORUM_LOST})


def _broker_members(body: Mapping[str, Any]) -> tuple[list[status.Problem], list[status.Problem]]:
    """(problems, warnings) from a Sentinel-managed broker's BrokerAvailable, as the tick wrote it."""
    for condition in _previous_conditions(body):
        if condition.type == status.BROKER_AVAILABLE and condition.status == "False":
            found = [status.Problem(condition.reason or "", condition.message or "")]
            if condition.reason in BROKER_MEMBERS_STOP_SERVICE:
                return found, []
            if condition.reason in BROKER_MEMBERS_DEGRADE:
                return [], found
    return [], []


def _optional(jq: JobQueue, kind: str, name: str) -> bool:
    """Whether every reference of the spec's env to this object is marked optional."""
    flags = []
    for source in jq.spec.env_from:
        ref = source.secret_ref if kind == "Secret" else source.config_map_ref
        if ref is not None and ref.name == name:
            flags.append(bool(ref.optional))
    for var in jq.spec.env:
        key_ref = (var.value_from or {}).get("secretKeyRef" if kind == "Secret" else "configMapKeyRef") or {}
        if key_ref.get("name") == name:
            flags.append(bool(key_ref.get("optional")))
    return bool(flags) and all(flags)


def _still_draining(world: World, queue: str, deployment: str) -> bool:
    """Whether the worker Deployment of a queue that left the spec is kept (its queue still holds tasks)."""
    return ("Deployment", deployment) in world.children and world.leftovers.get(queue, 0) != 0


def _prune(
    world: World, jq: JobQueue, desired: Sequence[Manifest]
) -> tuple[list[tuple[str, str, str]], list[DrainingQueue], list[tuple[str, int]], list[Event]]:
    """Children to delete, queues draining, replicas a draining queue needs, and the Events of draining."""
    keep = {(m["kind"], m["metadata"]["name"]) for m in desired}
    if jq.spec.broker.managed is not None:
        keep.add(("Secret", naming.redis_secret(jq.name)))
        keep.add(("Secret", naming.redis_operator_secret(jq.name)))
    delete, draining, replicas, events = [], [], [], []
    for (kind, name), child in sorted(world.children.items()):
        if (kind, name) in keep:
            continue
        queue = naming.queue_of(child.get("metadata") or {})
        if kind == "PodDisruptionBudget" and queue and _still_draining(world, queue, name):
            continue  # a draining queue's workers keep their budget until their Deployment goes
        tasks = world.leftovers.get(queue, 0) if kind == "Deployment" and queue else 0
        if tasks == 0:
            delete.append((str(child.get("apiVersion", "v1")), kind, name))
            if queue and kind == "Deployment":
                events.append(Event("Normal", Reason.QUEUE_DRAINED, f"queue {queue} left the spec and is empty"))
            continue
        assert queue is not None
        draining.append(DrainingQueue(name=queue, deployment=name, tasks=tasks))
        held = "an unknown number of" if tasks is None else str(tasks)
        message = (
            f"queue {queue} left the spec but still holds {held} tasks: its workers ({name}) keep running until "
            f"it is empty (to drop them instead: {contract.purge_command(queue)})"
        )
        events.append(Event("Warning", Reason.QUEUE_DRAINING, message, cause=queue))
        if status.deployment_replicas(child)[0] == 0 and tasks:
            replicas.append((name, 1))
    return delete, draining, replicas, events


def plan(world: World, previous: Sequence[Condition] | None, now: str) -> Plan:
    """What the reconcile should write. `previous`: the conditions last written (default: the body's)."""
    previous = _previous_conditions(world.body) if previous is None else previous
    if world.jq is None:
        return invalid(world, previous, now)
    mode = broker_mode.decide(world.jq, world.children)
    jq = mode.jq  # a running managed broker keeps its mode (broker_mode): everything below renders that one

    take, without = [], set()
    for queue in jq.spec.queues:
        name = naming.worker_deployment(jq.name, queue.name)
        live = world.children.get(("Deployment", name))
        if queue.autoscaled and live is not None:
            without.add(name)
            if not owns_replicas(live, naming.AUTOSCALER_FIELD_MANAGER):
                take.append((name, status.deployment_replicas(live)[0]))
    config = decide_broker.pod_config(jq, world.managed, world.config)
    desired = [drift.stamped(m) for m in children.desired(jq, config, without)]
    apply = [m for m in desired if not drift.up_to_date(m, world.children.get((m["kind"], m["metadata"]["name"])))]
    delete, draining, drain_replicas, events = _prune(world, jq, desired)

    broker_state = _broker_state(world, jq)
    broker: BrokerPlan | None = None
    if world.managed is not None:
        pod = broker_restart.broker_pod(world.pods, jq.name)
        broker_state = decide_broker.broker_state(jq, world.managed, broker_state, pod, world.broker_node_lost)
        asked = naming.RESTART_BROKER_ANNOTATION in ((world.body.get("metadata") or {}).get("annotations") or {})
        broker = decide_broker.plan(jq, world.managed, world.children, world.pods, desired, asked)
    queues = [_queue_observation(world, q, naming.worker_deployment(jq.name, q.name)) for q in jq.spec.queues]
    problems = _missing_config(world, jq)
    reported = _reported_by_workers(world.body)  # its Warning is the tick's, posted when it turned False
    stopping, degrading = _broker_members(world.body)  # the same
    observation = status.Observation(
        jq.generation,
        broker_state,
        queues,
        [*problems, *reported, *stopping],
        draining,
        broker_mode.up_to_date(mode, broker.up_to_date if broker else None),
        degrading,
    )
    computed = status.compute(observation, previous, now)

    events += [Event("Warning", p.reason, p.message) for p in problems]
    if not broker_state.ready and broker_state.reason != Reason.REDIS_STARTING:
        events.append(Event("Warning", broker_state.reason, broker_state.message, cause="broker"))
    events += [
        Event("Warning", _cause_reason(q), f"queue {q.name}: {q.cause.message}", cause=q.name)
        for q in queues
        if q.cause
    ]
    events += broker.events if broker else []
    events += broker_mode.events(mode)
    ready = next((c for c in computed.conditions if c.type == status.READY), None)
    password = (
        jq
        if jq.spec.broker.managed is not None and ("Secret", naming.redis_secret(jq.name)) not in (world.children)
        else None
    )
    return Plan(
        namespace=jq.namespace,
        name=jq.name,
        body=world.body,
        observation=observation,
        status=computed,
        password_secret_for=password,
        take_replicas=[*take, *drain_replicas],
        apply=apply,
        existing=world.children,
        delete=delete,
        events=events,
        converged=ready is not None
        and ready.status == "True"
        and not draining
        # a refused mode switch is not retried: nothing changes until the spec does
        and (broker is None or broker.up_to_date is None or broker.up_to_date[0] == "True"),
        references=frozenset(world.config),
        pods=world.pods,
        broker=broker,
    )


def _cause_reason(queue: status.QueueObservation) -> Reason:
    refused = queue.cause is not None and queue.cause.kind == "refused"
    return Reason.WORKER_PODS_REFUSED if refused else Reason.WORKERS_FAILING
