"""PURE: when the managed Redis may restart onto a changed template, and what the status says meanwhile.

Redis keeps its tasks in memory: a restart without persistence loses every task it holds (waiting, in
flight, dead letters). So the StatefulSet updates `OnDelete` (a template change never restarts Redis by
itself) and the reconciler deletes the Pod only when that loses nothing:

- the Pod runs the StatefulSet's current revision: nothing to do;
- the user asked for it (annotation `jobqueue.dev/restart-broker`): restart, losing what it holds;
- its container is not running (a crash loop, e.g. a memory limit too low): nothing in memory to keep,
  and only a new Pod gets the new template;
- Redis holds no task, or runs with the append-only file (it reloads it): restart;
- otherwise HOLD, and say how many tasks a restart would lose now, what is waiting and how to proceed;
  Redis restarts by itself once the tasks are done. Tasks that cannot be counted (Redis cannot be read)
  hold the restart too.

A highly available broker's members roll one replica at a time while the broker is whole; its master is
never deleted by the operator, it waits for a hand-over (`roll_members`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from jobqueue_operator import naming
from jobqueue_operator.broker_state import Held
from jobqueue_operator.models import SENTINEL_MEMBERS
from jobqueue_operator.reasons import Reason
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

REVISION_LABEL: Final = "controller-revision-hash"
"""The StatefulSet controller's label on each Pod: the revision of the template it was made from."""


@dataclass(frozen=True)
class Verdict:
    """The broker's template state: the BrokerUpToDate condition, and whether to delete the Pod now."""

    up_to_date: bool
    reason: Reason
    message: str
    restart: bool = False
    changes: tuple[str, ...] = ()
    why: str = ""
    """Why restarting now is safe, or that the user asked for it (the `BrokerRestarted` Event says it)."""
    lost: int = 0
    """Tasks the restart decided now loses (the user asked for it)."""
    asked: bool = False
    pod: str | None = None
    """The Pod to delete (a highly available broker's member); None: the single broker's `<jq>-redis-0`."""


def _container(spec: Mapping[str, Any] | None) -> Mapping[str, Any]:
    containers = (spec or {}).get("containers") or [{}]
    found: Mapping[str, Any] = containers[0]
    return found


def _resource_changes(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[str]:
    """Limits, and the requests the template sets (a Pod's requests default to its limits: not a change)."""
    changes = []
    for kind in ("limits", "requests"):
        had, has = before.get(kind) or {}, after.get(kind) or {}
        names = set(had) | set(has) if kind == "limits" else set(has)
        for name in sorted(names):
            if had.get(name) != has.get(name):
                singular = kind[:-1]
                changes.append(f"{name} {singular} {had.get(name, 'none')} -> {has.get(name, 'none')}")
    return changes


def changes(pod: Mapping[str, Any], template: Mapping[str, Any]) -> tuple[str, ...]:
    """What the template changes in the running Pod's Redis container, in words."""
    running, wanted = _container(pod.get("spec")), _container(template.get("spec"))
    found = []
    if running.get("image") != wanted.get("image"):
        found.append(f"image {running.get('image')} -> {wanted.get('image')}")
    found += _resource_changes(running.get("resources") or {}, wanted.get("resources") or {})
    fields = ("command", "args", "env", "readinessProbe", "livenessProbe", "volumeMounts")
    if any(running.get(key) != wanted.get(key) for key in fields if key != "volumeMounts"):
        found.append("redis-server's settings (arguments, environment or probes)")
    return tuple(found) or ("the Pod template",)


def _running(pod: Mapping[str, Any]) -> bool:
    statuses = (pod.get("status") or {}).get("containerStatuses") or []
    return bool(statuses) and all("running" in (s.get("state") or {}) for s in statuses)


def _held_words(held: Held) -> str:
    more = "" if held.complete else " or more (the key search stopped at its budget)"
    return (
        f"{held.total} tasks{more} ({held.waiting} waiting, {held.in_flight} in flight, "
        f"{held.dead_letters} dead letters)"
    )


def stale(statefulset: Mapping[str, Any] | None, pod: Mapping[str, Any] | None) -> bool:
    """The Redis Pod runs an older revision of the template than its StatefulSet's controller has (known
    only once the controller has seen the StatefulSet's latest generation)."""
    if statefulset is None or pod is None or (pod.get("metadata") or {}).get("deletionTimestamp"):
        return False
    observed = statefulset.get("status") or {}
    if observed.get("observedGeneration") != (statefulset.get("metadata") or {}).get("generation"):
        return False
    revision = ((pod.get("metadata") or {}).get("labels") or {}).get(REVISION_LABEL)
    return bool(observed.get("updateRevision")) and revision != observed["updateRevision"]


def decide(
    jobqueue: str,
    statefulset: Mapping[str, Any] | None,
    pod: Mapping[str, Any] | None,
    held: Held | None,
    aof: bool,
    unreadable: str | None,
    asked: bool,
) -> Verdict:
    """`held`/`aof`: what Redis holds now and whether it persists it (None/unreadable: it could not be read,
    `unreadable` says why); `asked`: the JobQueue carries the restart annotation."""
    name = naming.redis(jobqueue)
    if statefulset is None or pod is None or not stale(statefulset, pod):
        return Verdict(True, Reason.BROKER_POD_CURRENT, f"Redis runs the current template of StatefulSet {name}")
    found = changes(pod, (statefulset.get("spec") or {}).get("template") or {})
    waiting = "; ".join(found)
    how = (
        f"it restarts by itself once they are done (run or purge them), or now, losing them, with "
        f"`kubectl annotate jq {jobqueue} {naming.RESTART_BROKER_ANNOTATION}=true`"
    )
    if asked:
        lost = held.total if held is not None else 0
        words = _held_words(held) if held is not None else "the tasks it holds (uncounted)"
        why = f"on request ({naming.RESTART_BROKER_ANNOTATION}), losing {words}"
        return _restart(found, why, lost, asked=True)
    if not _running(pod):
        return _restart(found, "its container is not running, so it holds nothing to lose")
    if held is None:
        message = (
            f"a change waits for a Redis restart ({waiting}), held: a restart could lose the tasks Redis holds, "
            f"and they cannot be counted ({unreadable}); {how}"
        )
        return Verdict(False, Reason.BROKER_RESTART_HELD, message, changes=found)
    if aof:
        return _restart(found, "it persists its tasks (append-only file) and reloads them")
    if held.total == 0 and held.complete:
        return _restart(found, "it holds no task")
    message = (
        f"a change waits for a Redis restart ({waiting}), held: restarting now would lose {_held_words(held)}, "
        f"as persistence is off; {how}"
    )
    return Verdict(False, Reason.BROKER_RESTART_HELD, message, changes=found)


def _restart(found: tuple[str, ...], why: str, lost: int = 0, asked: bool = False) -> Verdict:
    message = f"restarting Redis for: {'; '.join(found)}; {why}"
    return Verdict(False, Reason.BROKER_RESTARTING, message, True, found, why, lost, asked)


def restarted_message(verdict: Verdict) -> str:
    """The `BrokerRestarted` Event of a restart decided by `decide`."""
    which = f"Redis Pod {verdict.pod}" if verdict.pod else "Redis Pod"
    return f"{which} deleted, to start on the new template ({'; '.join(verdict.changes)}): {verdict.why}"


def _ready(pod: Mapping[str, Any]) -> bool:
    """Running, Ready and not being deleted (a deleted Pod may still say Ready while it stops)."""
    conditions = (pod.get("status") or {}).get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
    return ready and _running(pod) and not (pod.get("metadata") or {}).get("deletionTimestamp")


def roll_members(
    jobqueue: str,
    statefulset: Mapping[str, Any] | None,
    pods: Sequence[Mapping[str, Any]],
    master: str | None,
    in_sync: int,
    unreadable: str,
) -> Verdict:
    """A highly available broker's members onto a changed template, one REPLICA at a time and only while the
    broker is whole: every member Pod Ready, the Sentinels' master answering (`master`, its `host:port`; None:
    none, `unreadable` says why), both replicas in sync (`in_sync`, the replicas the master streams to
    within `min-replicas-max-lag`). A replica's restart then costs nothing: the master and the other
    replica stay in sync (`min-replicas-to-write` holds), and the replica re-syncs.
    The master is never deleted by the operator (a delete is a failover after `downAfterMilliseconds`, in
    which writes are refused, and Sentinel's own hand-over can drop writes the master takes meanwhile): it
    waits, and the status says to hand it over with `SENTINEL FAILOVER`, after which it is a replica and
    rolls like one. The restart annotation is not honoured here: nothing of a highly available broker needs
    to lose its tasks to restart."""
    name = naming.redis(jobqueue)
    mine = [pod for pod in pods if str((pod.get("metadata") or {}).get("name") or "").startswith(f"{name}-")]
    waiting = sorted(str(pod["metadata"]["name"]) for pod in mine if stale(statefulset, pod))
    if not waiting:
        return Verdict(
            True, Reason.BROKER_POD_CURRENT, f"every Redis member runs the current template of StatefulSet {name}"
        )
    found = changes(next(pod for pod in mine if pod["metadata"]["name"] == waiting[0]), _template(statefulset))
    held = f"a change ({'; '.join(found)}) waits for Redis members {', '.join(waiting)} to restart, held: "
    if master is None:
        return Verdict(False, Reason.BROKER_RESTART_HELD, f"{held}no working master ({unreadable})", changes=found)
    unready = sorted(str(pod["metadata"]["name"]) for pod in mine if not _ready(pod))
    if unready or len(mine) < SENTINEL_MEMBERS or in_sync < SENTINEL_MEMBERS - 1:
        whole = (
            f"not ready: {', '.join(unready)}" if unready else f"{in_sync} of {SENTINEL_MEMBERS - 1} replicas in sync"
        )
        message = f"{held}one member at a time, each once every member is Ready and in sync ({whole})"
        return Verdict(False, Reason.BROKER_RESTARTING, message, changes=found)
    master_pod = master.split(".", 1)[0]
    replicas = [member for member in waiting if member != master_pod]
    if replicas:
        why = f"{replicas[0]} is a replica: the master {master_pod} and the other replica stay in sync"
        message = f"restarting Redis member {replicas[0]} for: {'; '.join(found)}; {why}"
        return Verdict(False, Reason.BROKER_RESTARTING, message, True, found, why, pod=replicas[0])
    message = (
        f"{held}{master_pod} is the master, which the operator does not delete: hand it over with "
        f"`SENTINEL FAILOVER {SENTINEL_MASTER_NAME}` on a Sentinel ({naming.sentinel(jobqueue)}-N, logged in "
        f"with the password of Secret {naming.redis_secret(jobqueue)}); it then restarts as a replica"
    )
    return Verdict(False, Reason.BROKER_RESTART_HELD, message, changes=found)


def _template(statefulset: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return ((statefulset or {}).get("spec") or {}).get("template") or {}


def broker_pod(pods: Sequence[Mapping[str, Any]], jobqueue: str) -> Mapping[str, Any] | None:
    """The managed Redis Pod (`<jq>-redis-0`) among the JobQueue's Pods."""
    wanted = f"{naming.redis(jobqueue)}-0"
    return next((p for p in pods if (p.get("metadata") or {}).get("name") == wanted), None)
