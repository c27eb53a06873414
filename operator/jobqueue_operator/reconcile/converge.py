"""Every write of one reconcile, in the order that is safe: the broker's password Secrets, the managed
broker's operator user and password step (Redis accepts a new password before the Secret's url carries it),
the replicas the autoscaler takes over, the children (applied together), the deletions, a managed Redis's
restart, then the status and the Events."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from jobqueue_operator import broker, broker_admin, broker_restart, events, kube, naming, status
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
    chosen = plan.broker.secret_password if plan.broker is not None else None
    secret = redis.secret(plan.password_secret_for, chosen or secrets.token_hex(24))
    if client.create(secret):
        return [Event("Normal", Reason.CREATED, f"Created Secret {secret['metadata']['name']}")]
    return []


def _operator_secret(client: kube.KubeApi, plan: Plan) -> list[Event]:
    if plan.broker is None or plan.broker.operator_secret_for is None:
        return []
    secret = redis.operator_secret(plan.broker.operator_secret_for, secrets.token_hex(24))
    if client.create(secret):
        return [Event("Normal", Reason.CREATED, f"Created Secret {secret['metadata']['name']}")]
    return []


def _broker_before(client: kube.KubeApi, plan: Plan) -> tuple[list[Event], list[status.Problem]]:
    """The StatefulSet's update strategy (before the apply may change its template), the operator's own user,
    then the password rotation's step: Redis first, then the Secret's url."""
    found = plan.broker
    if found is not None and found.switch_to_on_delete:
        name = naming.redis(plan.name)
        try:
            client.merge_patch("apps/v1", "StatefulSet", plan.namespace, name, redis.TO_ON_DELETE)
        except kube.KubeError as exc:
            return [], [status.Problem(Reason.BROKER_CONFIGURE_FAILED, f"switching to OnDelete failed: {exc}")]
    if found is None or found.admin_url is None:
        return [], []
    step = found.password
    try:
        if found.ensure_operator_user is not None:
            broker_admin.ensure_operator_user(
                found.admin_url, redis.OPERATOR_USER, found.ensure_operator_user, redis.OPERATOR_PERMISSIONS
            )
        if step.add is not None:
            broker_admin.add_password(found.admin_url, step.add)
        if step.keep_only is not None:
            broker_admin.keep_only_password(found.admin_url, step.keep_only)
    except broker.BrokerError as exc:
        return [], [status.Problem(Reason.BROKER_CONFIGURE_FAILED, f"configuring Redis's users failed: {exc}")]
    if step.url is not None:
        secret = naming.redis_secret(plan.name)
        try:
            client.write_secret_key(plan.namespace, secret, naming.URL_KEY, step.url)
        except kube.KubeError as exc:
            return [], [status.Problem(Reason.BROKER_CONFIGURE_FAILED, f"rewriting the url key failed: {exc}")]
    return list(step.events), []


def _restart_broker(client: kube.KubeApi, plan: Plan) -> tuple[list[Event], list[status.Problem]]:
    """Delete the managed Redis Pod when `broker_restart` decided it may go: its StatefulSet makes it again
    from the current template. The restart annotation is one shot: removed once used."""
    verdict = plan.broker.restart if plan.broker is not None else None
    if verdict is None or not verdict.restart:
        return [], []
    pod = verdict.pod or f"{naming.redis(plan.name)}-0"  # a highly available broker's member: the one decided
    try:
        client.delete_pod(plan.namespace, pod)
        if verdict.asked:
            client.remove_annotation(plan.namespace, plan.name, naming.RESTART_BROKER_ANNOTATION)
    except kube.KubeError as exc:
        return [], [status.Problem(Reason.BROKER_CONFIGURE_FAILED, f"restarting Redis failed: {exc}")]
    message = broker_restart.restarted_message(verdict)
    return [Event("Warning" if verdict.lost else "Normal", Reason.BROKER_RESTARTED, message)], []


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


def carry_out(client: kube.KubeApi, plan: Plan, memory: Memory, now: str, wanted: Callable[[], bool]) -> Outcome:
    """Carry out `plan`; the status written says what the writes could not do, too. `wanted` is asked
    right before the first write: a JobQueue marked for deletion meanwhile gets none (an apply now would
    put back the owner references an orphaning delete takes away)."""
    if not wanted():
        return Outcome(plan.status, [], True, plan.references, plan.pods)
    done = _password_secret(client, plan) + _operator_secret(client, plan)
    configured, unconfigured = _broker_before(client, plan)
    problems = _take_replicas(client, plan)
    # The children's config hashes assume the broker writes were done (the Secret's url rewritten): without
    # them, Pods would roll onto the old url under the new hash, and never roll again. Next reconcile.
    applied, refused = _apply(client, plan) if not unconfigured else ([], [])
    deleted, undeletable = _delete(client, plan)
    restarted, unrestarted = _restart_broker(client, plan)
    done += configured + restarted
    problems += unconfigured + refused + undeletable + unrestarted
    computed = status.with_problems(plan.status, plan.observation, problems, now)
    body = computed.to_body()
    if body != memory.written:
        client.apply_status(plan.namespace, plan.name, body, naming.FIELD_MANAGER)
        memory.written = body
    memory.conditions = list(computed.conditions)
    warnings = [Event("Warning", p.reason, p.message) for p in problems]
    posted = events.distinct([*done, *applied, *deleted, *plan.events, *warnings])
    for event in posted:
        client.post_event(plan.body, event)
    converged = plan.converged and not problems
    memory.failures = 0 if converged else memory.failures + 1
    return Outcome(computed, posted, converged, plan.references, plan.pods)


def retry_after(memory: Memory, first: float = 2.0, limit: float = 30.0) -> float:
    """Seconds before the next reconcile of a JobQueue that did not converge: 2, 4, 8 ... up to 30."""
    return float(min(first * 2 ** max(memory.failures - 1, 0), limit))
