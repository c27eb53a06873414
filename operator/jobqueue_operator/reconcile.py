"""Converge one JobQueue's children to the builders' output, prune what is no longer wanted, and work out
the status. Returns what happened; the kopf handlers post the Events and write the status."""

from __future__ import annotations

import base64
import binascii
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from jobqueue_operator import broker, kube, models, naming, status
from jobqueue_operator.build import children, drift, redis
from jobqueue_operator.models import Condition, JobQueue, JobQueueStatus

Manifest = dict[str, Any]


@dataclass(frozen=True)
class Event:
    type: Literal["Normal", "Warning"]
    reason: str
    message: str


@dataclass
class Outcome:
    status: JobQueueStatus
    events: list[Event] = field(default_factory=list)
    retry: str | None = None
    """Why the reconcile should be retried with back-off, if it should."""


def _previous_conditions(body: Mapping[str, Any]) -> list[Condition]:
    raw = (body.get("status") or {}).get("conditions") or []
    return [Condition.model_validate(item) for item in raw]


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"spec.{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def invalid(body: Mapping[str, Any], message: str, now: str) -> Outcome:
    """The outcome for a spec the schema let through but the operator cannot run."""
    generation = int(body.get("metadata", {}).get("generation", 0))
    observation = status.Observation(
        generation=generation,
        broker=status.BrokerState(False, "InvalidSpec", message),
        queues=(),
        problems=(status.Problem("InvalidSpec", message),),
    )
    computed = status.compute(observation, _previous_conditions(body), now)
    return Outcome(computed, [Event("Warning", "InvalidSpec", message)])


def _decoded(data: Mapping[str, str], key: str) -> str | None:
    if key not in data:
        return None
    try:
        return base64.b64decode(data[key]).decode()
    except (binascii.Error, UnicodeDecodeError):
        return None


def _ensure_password_secret(client: kube.Kube, jq: JobQueue, existing: Mapping[kube.Key, Manifest]) -> list[Event]:
    """Create the managed broker's password Secret once; an existing one is never rewritten."""
    name = naming.redis_secret(jq.name)
    if ("Secret", name) in existing:
        return []
    password = secrets.token_hex(24)
    secret = children.owned_by(redis.secret(jq, password), models.API_VERSION, models.KIND, jq.name, jq.uid)
    if client.create(secret):
        return [Event("Normal", "Created", f"Created Secret {name}")]
    return []


def _external_broker(client: kube.Kube, jq: JobQueue) -> status.BrokerState:
    external = jq.spec.broker.external
    assert external is not None
    ref = external.url_secret_ref
    data = client.secret_data(jq.namespace, ref.name)
    if data is None:
        return status.BrokerState(False, "BrokerSecretMissing", f"Secret {ref.name} does not exist")
    url = _decoded(data, ref.key)
    if url is None:
        return status.BrokerState(False, "BrokerSecretMissing", f"Secret {ref.name} has no key {ref.key}")
    try:
        broker.ping(url)
    except broker.BrokerError as exc:
        return status.BrokerState(False, "BrokerUnreachable", str(exc))
    return status.BrokerState(True, "BrokerReachable", "the external broker answers PING")


def _managed_broker(jq: JobQueue, applied: Mapping[kube.Key, Manifest]) -> status.BrokerState:
    name = naming.redis(jq.name)
    statefulset = applied.get(("StatefulSet", name))
    ready = ((statefulset or {}).get("status") or {}).get("readyReplicas") or 0
    if ready >= 1:
        return status.BrokerState(True, "RedisReady", f"StatefulSet {name} is ready")
    return status.BrokerState(False, "RedisStarting", f"StatefulSet {name} has no ready Pod yet")


def _result_backend_problems(client: kube.Kube, jq: JobQueue) -> list[status.Problem]:
    ref = jq.spec.results.backend_secret_ref
    if ref is None:
        return []
    data = client.secret_data(jq.namespace, ref.name)
    if data is None or ref.key not in data:
        return [status.Problem("ResultBackendSecretMissing", f"Secret {ref.name} with key {ref.key} does not exist")]
    return []


def _queue_observation(queue: models.Queue, name: str, deployment: Manifest | None) -> status.QueueObservation:
    if deployment is None:
        return status.QueueObservation(name=queue.name, deployment=name)
    observed = deployment.get("status") or {}
    stalled = any(
        c.get("type") == "Progressing" and c.get("status") == "False" for c in observed.get("conditions") or []
    )
    return status.QueueObservation(
        name=queue.name,
        deployment=name,
        desired=int((deployment.get("spec") or {}).get("replicas") or 0),
        replicas=int(observed.get("replicas") or 0),
        ready=int(observed.get("readyReplicas") or 0),
        available=int(observed.get("availableReplicas") or 0),
        stalled=stalled,
    )


def reconcile(client: kube.Kube, body: Mapping[str, Any], now: str) -> Outcome:
    """Apply every child of the JobQueue `body`, prune the rest, and compute its status."""
    try:
        jq = JobQueue.from_body(dict(body))
    except ValidationError as exc:
        return invalid(body, _validation_message(exc), now)

    existing = client.children(jq.namespace, jq.name)
    events: list[Event] = []
    problems: list[status.Problem] = []
    if jq.spec.broker.managed is not None:
        events += _ensure_password_secret(client, jq, existing)

    replicas = {name: int(obj["spec"]["replicas"]) for (kind, name), obj in existing.items() if kind == "Deployment"}
    desired = children.desired(jq, replicas)
    owned = [drift.stamped(children.owned_by(m, models.API_VERSION, models.KIND, jq.name, jq.uid)) for m in desired]
    applied: dict[kube.Key, Manifest] = {}
    changed = []
    for manifest in owned:
        key = (manifest["kind"], manifest["metadata"]["name"])
        if drift.up_to_date(manifest, existing.get(key)):
            applied[key] = existing[key]
        else:
            changed.append(manifest)
    for manifest, result in zip(changed, client.apply_many(changed), strict=True):
        key = (manifest["kind"], manifest["metadata"]["name"])
        if isinstance(result, kube.KubeError):
            problems.append(status.Problem("ApplyFailed", str(result)))
            continue
        applied[key] = result
        before = existing.get(key)
        if before is None:
            events.append(Event("Normal", "Created", f"Created {key[0]} {key[1]}"))
        elif before["metadata"]["resourceVersion"] != result["metadata"]["resourceVersion"]:
            events.append(Event("Normal", "Updated", f"Updated {key[0]} {key[1]}"))

    keep = kube.keys(desired)
    if jq.spec.broker.managed is not None:
        keep.add(("Secret", naming.redis_secret(jq.name)))
    for kind, name in sorted(set(existing) - keep):
        try:
            if client.delete(existing[(kind, name)]["apiVersion"], kind, jq.namespace, name):
                events.append(Event("Normal", "Deleted", f"Deleted {kind} {name}"))
        except kube.KubeError as exc:
            problems.append(status.Problem("DeleteFailed", str(exc)))

    external = jq.spec.broker.external is not None
    broker_state = _external_broker(client, jq) if external else _managed_broker(jq, applied)
    problems += _result_backend_problems(client, jq)

    queues = []
    for queue in jq.spec.queues:
        name = naming.worker_deployment(jq.name, queue.name)
        queues.append(_queue_observation(queue, name, applied.get(("Deployment", name))))
    observation = status.Observation(jq.generation, broker_state, queues, problems)
    computed = status.compute(observation, _previous_conditions(body), now)

    retry = None
    if problems:
        retry = "; ".join(p.message for p in problems)
        events += [Event("Warning", p.reason, p.message) for p in problems]
    elif not broker_state.ready and external:
        retry = broker_state.message
        events.append(Event("Warning", broker_state.reason, broker_state.message))
    return Outcome(computed, events, retry)
