"""Every write of one reconcile, in the order that is safe: the broker's password Secret, the replicas the
autoscaler takes over, the children (applied together), the deletions, then the status and the Events."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from jobqueue_operator import events, kube, naming, status
from jobqueue_operator.build import redis
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.events import Event
from jobqueue_operator.models import Condition, JobQueueStatus
from jobqueue_operator.reasons import Reason
from jobqueue_operator.reconcile.decide import Plan


@dataclass
class Memory:
    """What one JobQueue's reconciles remember between runs (in the operator's memory only)."""

    conditions: list[Condition] | None = None
    """The conditions last written: newer than the watched body until our own write comes back."""
    written: dict[str, Any] | None = None
    """The status body last applied, so an unchanged one is not written again."""
    posted: dict[tuple[str, str], float] = field(default_factory=dict)
    failures: int = 0
    """Reconciles in a row that did not converge, for the back-off."""


@dataclass
class Outcome:
    status: JobQueueStatus
    events: list[Event]
    converged: bool
    references: frozenset[tuple[str, str]] = frozenset()
    """("Secret" or "ConfigMap", name) the JobQueue's Pods read."""
    pods: Sequence[Manifest] = ()
    """The JobQueue's Pods as this reconcile read them (the worker restart counters look at them)."""


def _password_secret(client: kube.KubeApi, plan: Plan) -> list[Event]:
    if plan.password_secret_for is None:
        return []
    secret = redis.secret(plan.password_secret_for, secrets.token_hex(24))
    if client.create(secret):
        return [Event("Normal", Reason.CREATED, f"Created Secret {secret['metadata']['name']}")]
    return []


def _take_replicas(client: kube.KubeApi, plan: Plan) -> list[status.Problem]:
    problems = []
    for name, replicas in plan.take_replicas:
        try:
            client.scale(plan.namespace, name, replicas)
        except kube.KubeError as exc:
            problems.append(status.Problem(Reason.APPLY_FAILED, str(exc)))
    return problems


def _changed(before: Manifest, after: Manifest) -> bool:
    """Whether an apply changed what a child does: its spec (or, without one, anything). Not its metadata:
    handing `replicas` over to the autoscaler changes only who owns a field, and the applied-hash with it."""
    if "spec" in before or "spec" in after:
        return bool(before.get("spec") != after.get("spec"))
    return bool(before["metadata"]["resourceVersion"] != after["metadata"]["resourceVersion"])


def _apply(client: kube.KubeApi, plan: Plan) -> tuple[list[Event], list[status.Problem]]:
    done, problems = [], []
    for manifest, result in zip(plan.apply, client.apply_many(plan.apply), strict=True):
        key = (manifest["kind"], manifest["metadata"]["name"])
        if isinstance(result, kube.KubeError):
            problems.append(status.Problem(Reason.APPLY_FAILED, str(result)))
            continue
        before = plan.existing.get(key)
        if before is None:
            done.append(Event("Normal", Reason.CREATED, f"Created {key[0]} {key[1]}"))
        elif _changed(before, result):
            done.append(Event("Normal", Reason.UPDATED, f"Updated {key[0]} {key[1]}"))
    return done, problems


def _delete(client: kube.KubeApi, plan: Plan) -> tuple[list[Event], list[status.Problem]]:
    done, problems = [], []
    for api_version, kind, name in plan.delete:
        try:
            if client.delete(api_version, kind, plan.namespace, name):
                done.append(Event("Normal", Reason.DELETED, f"Deleted {kind} {name}"))
        except kube.KubeError as exc:
            problems.append(status.Problem(Reason.DELETE_FAILED, str(exc)))
    return done, problems


def carry_out(
    client: kube.KubeApi, plan: Plan, memory: Memory, now: str, clock: float, wanted: Callable[[], bool]
) -> Outcome:
    """Carry out `plan`; the status written says what the writes could not do, too. `wanted` is asked
    right before the first write: a JobQueue marked for deletion meanwhile gets none (an apply now would
    put back the owner references an orphaning delete takes away)."""
    if not wanted():
        return Outcome(plan.status, [], True, plan.references, plan.pods)
    done = _password_secret(client, plan)
    problems = _take_replicas(client, plan)
    applied, refused = _apply(client, plan)
    deleted, undeletable = _delete(client, plan)
    problems += refused + undeletable
    computed = status.with_problems(plan.status, plan.observation, problems, now)
    body = computed.to_body()
    if body != memory.written:
        client.apply_status(plan.namespace, plan.name, body, naming.FIELD_MANAGER)
        memory.written = body
    memory.conditions = list(computed.conditions)
    warnings = [Event("Warning", p.reason, p.message) for p in problems]
    posted, memory.posted = events.to_post([*done, *applied, *deleted, *plan.events, *warnings], memory.posted, clock)
    for event in posted:
        client.post_event(plan.body, event.type, event.reason, event.message)
    converged = plan.converged and not problems
    memory.failures = 0 if converged else memory.failures + 1
    return Outcome(computed, posted, converged, plan.references, plan.pods)


def retry_after(memory: Memory, first: float = 2.0, limit: float = 30.0) -> float:
    """Seconds before the next reconcile of a JobQueue that did not converge: 2, 4, 8 ... up to 30."""
    return float(min(first * 2 ** max(memory.failures - 1, 0), limit))
