"""The fault scenarios: each deploys its JobQueue on a `Stage`, sends tasks of one run, injects its fault,
waits for the queue to finish and returns an `Outcome`: the checker's verdict, the measured times and
every bound it broke, in words. The e2e tests run each at a small `Size`; `bench/soak.py` runs them all
at a large one. Bounds are the same at every size (docs/faults.md lists them).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Final

import requests
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import demo
from jobqueue_devenv.deployer import condition
from jobqueue_devenv.faults import broker_process
from jobqueue_devenv.faults.checker import Verdict, spread
from jobqueue_devenv.faults.stage import (
    Stage,
    Target,
    held_tasks,
    manifest,
    pause,
    queue,
    restarts,
    wait_for_busy_pod,
)
from jobqueue_devenv.waiting import TimedOut, wait_until
from jobqueue_operator import naming
from jobqueue_operator.reasons import Reason
from jobqueue_operator.status import BROKER_MEMORY_AVAILABLE
from jobqueue_worker import contract

RESTART_BOUND_S: Final = 30.0
"""A killed worker's tasks start again, and the broker is back and serving, within this."""
CONVERGE_BOUND_S: Final = 60.0
"""The operator, killed, has everything converged again within this."""
OOM_REQUEUE_BOUND_S: Final = 10.0
"""An OOM-killed task starts again within this (Celery notices its pool child is gone at once)."""
TICK_S: Final = 5.0
"""The operator's default autoscaler tick (`--autoscale-seconds`): 'within one tick' allows one more
for the write to land."""
DRAIN_TIMEOUT_S: Final = 300.0
ACKED_BEFORE_KILL_S: Final = 1.5
"""Redis with `appendfsync everysec` may lose the last second of writes: tasks sent before that survive."""
SAMPLE_S: Final = 0.5


@dataclass(frozen=True)
class Size:
    tasks: int
    """Tasks sent by the scenario, in total."""
    faults: int = 1
    """How many times the fault is injected (each one measured)."""
    slack: float = 1.0
    """The node scenarios' time bounds are multiplied by this: above 1 at CI size, where the machine runs
    other tests beside; 1 at soak size, which checks the issue's own numbers."""

    def per_fault(self) -> int:
        return max(1, self.tasks // self.faults)


@dataclass
class Outcome:
    scenario: str
    verdict: Verdict = field(default_factory=lambda: Verdict(tasks=0))
    recovery_s: list[float] = field(default_factory=list)
    """Fault to recovery, once per fault (what 'recovery' means is the scenario's docstring)."""
    problems: list[str] = field(default_factory=list)
    measured: dict[str, list[float]] = field(default_factory=dict)
    """Other times a scenario measures, by name, once per fault (a replacement Ready, a leader elected)."""

    def measure(self, name: str, seconds: float | None) -> None:
        """Record one measured time (None, not within its wait, is recorded as infinite)."""
        self.measured.setdefault(name, []).append(float("inf") if seconds is None else seconds)

    def expect(self, ok: bool, problem: str) -> None:
        if not ok:
            self.problems.append(problem)

    def within(self, seconds: float | None, bound: float, what: str) -> None:
        self.expect(seconds is not None and seconds <= bound, f"{what}: {seconds} s, bound {bound} s")

    def row(self) -> dict[str, Any]:
        times = spread(self.recovery_s)
        measured = {name: _spread_row(seconds) for name, seconds in self.measured.items()}
        return {
            "scenario": self.scenario,
            **self.verdict.counts(),
            "recovery_median_s": _round(times["median"]),
            "recovery_worst_s": _round(times["worst"]),
            "faults": len(self.recovery_s),
            "problems": list(self.problems),
            **({"measured": measured} if measured else {}),
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def _spread_row(seconds: Sequence[float]) -> dict[str, float | None]:
    times = spread(seconds)
    return {"median_s": _round(times["median"]), "worst_s": _round(times["worst"])}


def seconds_until(
    probe: Callable[[], object], *, timeout: float, what: str, interval: float, since: float | None = None
) -> float | None:
    """Seconds until `probe` holds, measured from now or from `since` (a fault's `time.time()`); None (not
    raised) when it did not within `timeout`: a scenario reports a broken bound instead of stopping."""
    t0 = time.time() if since is None else since
    try:
        wait_until(probe, timeout=timeout, what=what, interval=interval)
    except TimedOut:
        return None
    return time.time() - t0


def wait_done(target: Target, ids: Collection[str], timeout: float = DRAIN_TIMEOUT_S) -> bool:
    """Until every id in `ids` is done in the ledger; False when the time ran out."""
    wanted = set(ids)
    done = seconds_until(
        lambda: wanted <= target.ledger.done().keys(), timeout=timeout, what="tasks done", interval=0.5
    )
    return done is not None


def started_again(target: Target, ids: Collection[str], before: dict[str, int], timeout: float) -> float | None:
    """Seconds until every id in `ids` started more often than in `before`, or had finished: a task the
    killed process finished between the last look and its death has nothing to come back (None: not
    within `timeout`)."""

    def back() -> bool:
        started, done = target.ledger.started(), target.ledger.done()
        return all(started.get(i, 0) > before.get(i, 0) or done.get(i, 0) > 0 for i in ids)

    return seconds_until(
        back,
        timeout=timeout,
        what="the killed worker's tasks started again",
        interval=0.1,
    )


def _started_count(target: Target, ids: Collection[str]) -> int:
    return len(set(ids) & target.ledger.started().keys())


def _all_started(target: Target, ids: Collection[str]) -> bool:
    return set(ids) <= target.ledger.started().keys()


def settle(
    outcome: Outcome,
    target: Target,
    ordinary: Sequence[str],
    *,
    may_restart: Collection[str] = (),
    dead_lettered: Sequence[str] = (),
    missing: str = "not every task done",
) -> None:
    """Wait for every ordinary task, then judge the run: the verdict, and the bounds every scenario has.
    Every ordinary task done; run twice only where a fault cut a task off (at-least-once), nowhere else."""
    finished = wait_done(target, ordinary)
    outcome.verdict = target.ledger.verdict(
        [*ordinary, *dead_lettered], may_restart=may_restart, dead_lettered=dead_lettered
    )
    outcome.expect(finished, missing)
    extra = outcome.verdict.duplicated - frozenset(may_restart)
    outcome.expect(not extra, f"{len(extra)} tasks ran twice that no fault interrupted")
    lettered = _letters(target, outcome.verdict.lost)
    shown = "; ".join(f"{task}: {why}" for task, why in sorted(lettered.items())[:3])
    outcome.expect(not lettered, f"{len(lettered)} tasks dead-lettered that should have run ({shown})")


def _letters(target: Target, ids: Collection[str]) -> dict[str, str]:
    """Which of `ids` sit in a dead-letter list of the target's queues, with the reason and exception:
    a lost task explained (the operator's poison rule, say), rather than only counted."""
    return {
        letter.task_id: f"{letter.reason.value}: {letter.exception}"
        for queue_name in target.deployed.queues()
        for letter in _dead_letters(target, queue_name)
        if letter.task_id in ids
    }


def _dead_letters(target: Target, queue_name: str) -> list[contract.DeadLetter]:
    """A queue's dead-letter list, as the worker wrote it."""
    raws = target.broker.lrange(contract.dead_letter_key(queue_name), 0, -1)
    return [contract.DeadLetter.from_json(raw) for raw in raws]


# ---- 1. a worker Pod force-deleted mid-task ----------------------------------------------------------


SLEEP_S: Final = 4.0
"""The tasks a killed worker runs: long enough that the kill (a kubectl call, then the node agent's
SIGKILL) lands while they run."""


def worker_killed(here: Stage, size: Size) -> Outcome:
    """Worker Pods force-deleted (grace 0) while they run tasks, one at a time. Recovery: from the delete
    to every task that Pod held having started again (the operator puts them back at the head of their
    queue, whatever the visibility timeout) or finished before it died; measured for each kill that cut
    a task off (a kill whose held tasks all finished first has nothing to recover). A replacement Pod
    is Ready within the same bound."""
    outcome = Outcome("worker-killed")
    # A redelivered task goes to the head of its queue, so the next kill may cut it off again: the poison
    # rule (scenario 3) must not take a task that only this scenario's kills interrupted.
    dead_letter = {"maxWorkerLosses": size.faults + 1}
    target = here.deploy(manifest("killed", [queue("work", replicas=2, concurrency=2, deadLetter=dead_letter)]))
    sent: list[str] = []
    cut_off: set[str] = set()
    for _ in range(size.faults):
        sent += target.send("work", "sleep", 6, seconds=SLEEP_S)
        sent += target.send("work", "noop", max(0, size.per_fault() - 6))
        pod, held = wait_for_busy_pod(here, target, "work")
        wait_until(partial(_started_count, target, held), timeout=30, what="a held task running")
        held = set(held_tasks(target.broker).get(pod, {})) - target.ledger.done().keys()  # as it is at the kill
        before = target.ledger.started()
        here.force_delete("pod", pod)
        cut_off |= held
        again = started_again(target, held, before, timeout=120)
        restarted = {i for i, count in target.ledger.started().items() if i in held and count > before.get(i, 0)}
        if again is None or restarted:
            outcome.recovery_s.append(float("inf") if again is None else again)
        ready = wait_until_ready_workers(here, target, "work", 2, exclude={pod})
        outcome.within(ready, RESTART_BOUND_S, "a replacement worker Ready")
    settle(outcome, target, sent, may_restart=cut_off)
    outcome.expect(bool(outcome.recovery_s), "no kill cut a task off")
    for seconds in outcome.recovery_s:
        outcome.within(seconds, RESTART_BOUND_S, "the killed worker's tasks started again")
    outcome.expect(here.wait_for_event(Reason.WORKER_LOST), "no WorkerLost Event")
    return outcome


def wait_until_ready_workers(
    here: Stage, target: Target, queue_name: str, count: int, exclude: Collection[str] = (), timeout: float = 120
) -> float | None:
    """Seconds until `count` workers of the queue are Ready, not counting `exclude` (None: not in time)."""
    return seconds_until(
        lambda: len(set(here.ready_workers(target.deployed.name, queue_name)) - set(exclude)) >= count,
        timeout=timeout,
        what=f"{count} ready {queue_name} workers",
        interval=0.2,
    )


# ---- 4. scale-down while every worker is busy --------------------------------------------------------


def scale_down_busy(here: Stage, size: Size) -> Outcome:
    """Three workers, each running a task shorter than its grace period, scaled to one: each finishes
    what it runs and gives back what it holds; nothing is interrupted. Recovery: the delete to one Pod."""
    outcome = Outcome("scale-down-busy")
    workers = 3
    body = manifest("shrink", [queue("work", replicas=workers, concurrency=1)])
    target = here.deploy(body)
    sent: list[str] = []
    for _ in range(size.faults):
        wait_until_ready_workers(here, target, "work", workers)
        long = target.send("work", "sleep", workers, seconds=3.0)
        sent += long + target.send("work", "noop", max(0, size.per_fault() - workers))
        wait_until(partial(_all_started, target, long), timeout=60, what="every worker busy")
        t0 = time.time()
        here.apply(with_queue(body, "work", replicas=1))
        wait_until(lambda: len(here.worker_pods(target.deployed.name, "work")) == 1, timeout=120, what="one Pod")
        outcome.recovery_s.append(time.time() - t0)
        here.apply(with_queue(body, "work", replicas=workers))
    settle(outcome, target, sent)
    outcome.expect(not outcome.verdict.interrupted, f"{len(outcome.verdict.interrupted)} tasks interrupted")
    return outcome


def with_queue(body: dict[str, Any], name: str, **fields: Any) -> dict[str, Any]:
    """`body` with one queue's fields changed (a copy)."""
    copy: dict[str, Any] = json.loads(json.dumps(body))
    for item in copy["spec"]["queues"]:
        if item["name"] == name:
            item.update(fields)
    return copy


# ---- 5. a rolling update under steady load -----------------------------------------------------------


class SteadySender:
    """Sends short tasks at a steady rate in a thread until stopped; keeps the ids it sent."""

    def __init__(self, target: Target, queue_name: str, per_second: float, seconds: float = 0.2) -> None:
        self.target, self.queue, self.every, self.seconds = target, queue_name, 1.0 / per_second, seconds
        self.sent: list[str] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> SteadySender:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            try:
                self.sent += self.target.send(self.queue, "sleep", 1, seconds=self.seconds)
            except Exception as exc:  # a refused send is counted, never lost silently
                self.errors.append(f"{type(exc).__name__}: {exc}")


def rolling_update(here: Stage, size: Size) -> Outcome:
    """The worker template changed (an env var) while tasks arrive steadily: the Deployment rolls, old
    workers finish what they run, nothing is lost or interrupted. Recovery: the change to the rollout
    done."""
    outcome = Outcome("rolling-update")
    body = manifest("rolling", [queue("work", replicas=2, concurrency=2)])
    target = here.deploy(body)
    rate = 20.0
    seconds_each = size.per_fault() / rate
    deployment = naming.worker_deployment(target.deployed.name, "work")
    with SteadySender(target, "work", rate) as sender:
        for round_ in range(size.faults):
            t0 = time.time()
            changed = json.loads(json.dumps(body))
            changed["spec"]["env"] = [{"name": "FAULT_ROUND", "value": str(round_)}]
            here.apply(changed)
            here.kube.kubectl("rollout", "status", f"deployment/{deployment}", "-n", here.namespace, "--timeout=180s")
            outcome.recovery_s.append(time.time() - t0)
            pause(max(0.0, seconds_each - (time.time() - t0)))  # the rest of this round's load
    settle(outcome, target, sender.sent)
    outcome.expect(not sender.errors, f"{len(sender.errors)} sends refused: {sender.errors[:1]}")
    outcome.expect(not outcome.verdict.interrupted, f"{len(outcome.verdict.interrupted)} tasks interrupted")
    return outcome


# ---- 6. the Redis Pod deleted, with persistence -------------------------------------------------------


def redis_restart(here: Stage, size: Size) -> Outcome:
    """The managed Redis (append-only file, fsync every second) force-deleted under load: tasks sent more
    than a second before survive, the workers and the operator reconnect without a restart. Recovery:
    the delete to the first task sent afterwards having started."""
    outcome = Outcome("redis-restart")
    body = manifest(
        "persist", [queue("work", replicas=1, concurrency=2)], broker={"managed": {"persistence": {"enabled": True}}}
    )
    target = here.deploy(body)
    sent: list[str] = []
    cut_off: set[str] = set()
    redis_pod = f"{naming.redis(target.deployed.name)}-0"
    for _ in range(size.faults):
        half = size.per_fault() // 2
        sent += target.send("work", "sleep", 4, seconds=1.5) + target.send("work", "noop", half)
        not_done_early = set(sent) - target.ledger.done().keys()
        pause(ACKED_BEFORE_KILL_S)  # the sends returned: the bound is for tasks acked over 1 s before the kill
        pods_before = here.worker_pods(target.deployed.name, "work")
        old = here.kube.get("pod", redis_pod, "-n", here.namespace)["metadata"]["uid"]
        t0 = here.force_delete("pod", redis_pod)
        wait_until(partial(_old_redis_gone, here, target, redis_pod, old), timeout=30, what="the old Redis gone")
        # At-least-once: what was not done a moment before the kill may run again (its pop or its ack
        # may be in the last second the append-only file had not written yet).
        cut_off |= not_done_early
        wait_until(lambda: _reconnect(here, target), timeout=120, what="the new Redis answering", interval=0.5)
        after = target.send("work", "noop", size.per_fault() - half - 4)
        sent += after
        first = wait_until(partial(_started_at, target, after), timeout=120, what="a task sent after the restart")
        outcome.recovery_s.append(first - t0)
        outcome.expect(restarts(here.worker_pods(target.deployed.name, "work")) == restarts(pods_before),
                       "a worker container restarted")  # fmt: skip
    settle(outcome, target, sent, may_restart=cut_off)
    for seconds in outcome.recovery_s:
        outcome.within(seconds, RESTART_BOUND_S, "served again after the Redis restart")
    return outcome


def _answers(target: Target) -> bool:
    try:
        return bool(target.broker.ping())
    except Exception:
        return False


def _old_redis_gone(here: Stage, target: Target, pod: str, uid: str) -> bool:
    """The killed Redis no longer answers, or its Pod is already a new one."""
    if not _answers(target):
        return True
    found = here.kube.kubectl("get", "pod", pod, "-n", here.namespace, "--ignore-not-found", "-o", "json")
    return not found.strip() or json.loads(found)["metadata"]["uid"] != uid


def _reconnect(here: Stage, target: Target) -> bool:
    """Point the producer and the broker client at the new Redis Pod (its IP may differ)."""
    here.reconnect(target)
    return _answers(target)


def _started_at(target: Target, ids: Sequence[str]) -> float | None:
    return time.time() if set(ids) & target.ledger.started().keys() else None


# ---- 10. an unlisted queue, and a queue removed while it holds tasks ----------------------------------


def stranded_queues(here: Stage, size: Size) -> Outcome:
    """Tasks sent to a queue the JobQueue does not list are reported (status.unservedQueues, a Warning
    Event) within one tick; a queue removed while it holds tasks keeps a draining worker until it is
    empty. Then the stray queue is added to the spec and its tasks run: nothing was lost. Recovery:
    the send to the report."""
    outcome = Outcome("stranded-queues")
    body = manifest("stranded", [queue("kept"), queue("removed", replicas=0)])
    target = here.deploy(body)
    third = max(1, size.tasks // 3)
    sent = target.send("kept", "noop", third)
    t0 = time.time()
    stray = target.send("stray", "noop", third)
    reported = wait_until(
        lambda: _unserved(here, target, "stray") == len(stray) and time.time(),
        timeout=60,
        what="the stray queue reported",
        interval=0.2,
    )
    outcome.recovery_s.append(reported - t0)
    outcome.within(reported - t0, 2 * TICK_S, "the stray queue reported")
    outcome.expect(here.wait_for_event(Reason.UNSERVED_QUEUES), "no UnservedQueues Event")
    removed = target.send("removed", "noop", third)
    wait_until(lambda: demo.depths(target.broker, ["removed"])["removed"].ready == len(removed), timeout=30, what="x")
    t1 = time.time()
    without = json.loads(json.dumps(body))
    without["spec"]["queues"] = [queue("kept")]
    here.apply(without)
    draining = wait_until(lambda: _draining(here, target, "removed") and time.time(), timeout=60, what="draining")
    outcome.within(draining - t1, 2 * TICK_S, "the removed queue reported draining")
    drained = wait_done(target, removed)
    outcome.expect(drained, "the removed queue's tasks did not all run")
    gone = naming.worker_deployment(target.deployed.name, "removed")
    wait_until(lambda: not _exists(here, "deployment", gone), timeout=120, what="the draining worker removed")
    here.apply({**without, "spec": {**without["spec"], "queues": [queue("kept"), queue("stray")]}})
    settle(outcome, target, sent + stray + removed)
    return outcome


def _unserved(here: Stage, target: Target, name: str) -> int:
    status = here.status(target.deployed.name)
    return sum(q["tasks"] for q in status.get("unservedQueues") or [] if q["name"] == name)


def _draining(here: Stage, target: Target, name: str) -> bool:
    status = here.status(target.deployed.name)
    return any(q["name"] == name for q in status.get("drainingQueues") or [])


def _exists(here: Stage, kind: str, name: str) -> bool:
    found = here.kube.kubectl("get", kind, "-n", here.namespace, "--ignore-not-found", "-o", "name", name)
    return bool(found.strip())


# ---- 3. a poison task that kills its worker -----------------------------------------------------------


MAX_WORKER_LOSSES: Final = 2


def poison_task(here: Stage, size: Size) -> Outcome:
    """`crash` tasks (each SIGKILLs the process running it) among ordinary ones: each is dead-lettered
    after `MAX_WORKER_LOSSES` losses with a Warning Event, the queue keeps flowing."""
    outcome = Outcome("poison-task")
    dead_letter = {"maxWorkerLosses": MAX_WORKER_LOSSES}
    target = here.deploy(manifest("poison", [queue("work", replicas=1, concurrency=2, deadLetter=dead_letter)]))
    poison: list[str] = []
    sent: list[str] = []
    for _ in range(size.faults):
        poison += target.send("work", "crash", 1)
        sent += target.send("work", "noop", size.per_fault() - 1)
    t0 = time.time()
    lettered = wait_until(
        lambda: set(poison) <= _dead_lettered(target, "work") and time.time(),
        timeout=DRAIN_TIMEOUT_S,
        what="every poison task dead-lettered",
        interval=0.5,
    )
    outcome.recovery_s.append(lettered - t0)
    settle(outcome, target, sent, may_restart=poison, dead_lettered=poison, missing="not every ordinary task done")
    starts = target.ledger.started()
    outcome.expect(all(starts.get(i, 0) <= MAX_WORKER_LOSSES + 1 for i in poison), "a poison task ran too often")
    outcome.expect(here.wait_for_event(Reason.DEAD_LETTERS), "no DeadLetters Event")
    return outcome


def _dead_lettered(target: Target, queue_name: str) -> set[str]:
    return {letter.task_id for letter in _dead_letters(target, queue_name)}


# ---- 8. the operator killed mid-reconcile ------------------------------------------------------------


def operator_killed(here: Stage, size: Size, operator: demo.RunningOperator) -> Outcome:
    """The operator Pod force-deleted right after a JobQueue is created and again right after a queue
    is scaled to zero: no duplicate children, the decision not lost, converged within 60 s."""
    outcome = Outcome("operator-killed")
    queues = [queue("a"), queue("b"), queue("c")]
    body = manifest("restarted", queues)
    here.apply(body)
    t0 = _kill_operator(here, operator)
    target = here.deploy(body)  # waits until Ready
    outcome.recovery_s.append(time.time() - t0)
    sent = [i for q in ("a", "b", "c") for i in target.send(q, "noop", max(1, size.tasks // 3))]
    settle(outcome, target, sent)
    here.apply(with_queue(body, "c", replicas=0))
    t1 = _kill_operator(here, operator)
    deployment = naming.worker_deployment(target.deployed.name, "c")
    wait_until(lambda: deployment_replicas(here, deployment) == 0 and not here.worker_pods("restarted", "c"),
               timeout=120, what="queue c at zero")  # fmt: skip
    outcome.recovery_s.append(time.time() - t1)
    for seconds in outcome.recovery_s:
        outcome.within(seconds, CONVERGE_BOUND_S, "converged after the operator was killed")
    names = here.kube.kubectl("get", "deployments,statefulsets", "-n", here.namespace, "-o", "name").split()
    outcome.expect(len(names) == len(set(names)) == 4, f"children: {names}")
    return outcome


def _kill_operator(here: Stage, operator: demo.RunningOperator) -> float:
    pod = wait_until(lambda: demo.operator_pod(here.kube, operator.release, operator.namespace), timeout=120,
                     what="the operator Ready")  # fmt: skip
    at = time.time()
    here.kube.kubectl("delete", "pod", pod["metadata"]["name"], "-n", operator.namespace, "--grace-period=0",
                      "--force", "--wait=false")  # fmt: skip
    return at


def deployment_replicas(here: Stage, deployment: str) -> int | None:
    got = here.kube.get("deployment", deployment, "-n", here.namespace)
    return int(got["spec"].get("replicas", 1))


# ---- 9. the broker unreachable for the autoscaler -----------------------------------------------------


def broker_unreachable(here: Stage, size: Size) -> Outcome:
    """The broker stops answering (its process frozen) while tasks wait: the autoscaler never scales the
    queue to zero, and says why; once it answers, every task runs. Recovery: thaw to all done."""
    outcome = Outcome("broker-unreachable")
    autoscaling = {"minReplicas": 0, "maxReplicas": 2, "idleSecondsBeforeZero": 2, "targetTasksPerWorker": 5}
    autoscaled = {"name": "work", "concurrency": 1, "autoscaling": autoscaling}
    body = manifest("frozen", [autoscaled])
    target = here.deploy(body)
    deployment = naming.worker_deployment(target.deployed.name, "work")
    sent = target.send("work", "sleep", size.tasks, seconds=1.0)
    wait_until(lambda: (deployment_replicas(here, deployment) or 0) >= 1, timeout=60, what="scaled up")
    seen: list[int] = []
    reasons: set[str] = set()
    with broker_process.frozen(target.deployed.url):
        deadline = time.time() + 4 * TICK_S
        while time.time() < deadline:
            seen.append(deployment_replicas(here, deployment) or 0)
            reasons |= condition_reasons(here, target)
            pause(SAMPLE_S)
        t0 = time.time()
    settle(outcome, target, sent)
    outcome.recovery_s.append(time.time() - t0)
    outcome.expect(min(seen, default=0) >= 1, f"scaled to zero while the broker was unreachable: {seen}")
    said = {Reason.BROKER_UNREACHABLE, Reason.METRICS_UNAVAILABLE} & reasons
    outcome.expect(bool(said), f"no condition said the broker could not be read: {reasons}")
    return outcome


def condition_reasons(here: Stage, target: Target) -> set[str]:
    return {c.get("reason", "") for c in here.status(target.deployed.name).get("conditions") or []}


# ---- 2. a prefork child killed for memory -------------------------------------------------------------


MEMORY_LIMIT: Final = "256Mi"
HOG_MEGABYTES: Final = 512
"""Over the worker container's memory limit: the kernel's OOM killer ends the pool child holding it."""


def child_oom_killed(here: Stage, size: Size) -> Outcome:
    """A task that allocates more than the worker container's memory limit, among ordinary ones: the
    kernel kills its prefork child; the task goes back (never silently acked) and runs again within
    seconds, until the worker-loss limit dead-letters it; the worker and the queue go on. Recovery: the
    first start to the next one."""
    outcome = Outcome("child-oom-killed")
    fields = {"concurrency": 2, "deadLetter": {"maxWorkerLosses": MAX_WORKER_LOSSES}}
    limits = {"limits": {"memory": MEMORY_LIMIT}, "requests": {"memory": "64Mi"}}
    target = here.deploy(manifest("oom", [queue("work", resources=limits, **fields)]))
    hogs: list[str] = []
    sent: list[str] = []
    for _ in range(size.faults):
        (hog,) = target.send("work", "allocate", 1, megabytes=HOG_MEGABYTES, hold_seconds=1)
        hogs.append(hog)
        sent += target.send("work", "allocate", 2, megabytes=16) + target.send("work", "noop", size.per_fault() - 3)
        first = wait_until(partial(_started_at, target, [hog]), timeout=60, what="the hog started")
        again = started_again(target, [hog], {hog: 1}, timeout=60)  # seconds after `first` was seen
        outcome.recovery_s.append(float("inf") if again is None else time.time() - first)
    lettered = wait_until(
        lambda: set(hogs) <= _dead_lettered(target, "work"), timeout=DRAIN_TIMEOUT_S, what="hogs dead-lettered"
    )
    outcome.expect(bool(lettered), "a hog was not dead-lettered")
    settle(outcome, target, sent, may_restart=hogs, dead_lettered=hogs, missing="not every ordinary task done")
    for seconds in outcome.recovery_s:
        outcome.within(seconds, OOM_REQUEUE_BOUND_S, "the OOM-killed task started again")
    outcome.expect(restarts(here.worker_pods(target.deployed.name, "work")) == 0, "the worker container restarted")
    return outcome


# ---- 7. the broker full -------------------------------------------------------------------------------


BROKER_MEMORY_LIMIT: Final = "32Mi"
PADDING_BYTES: Final = 64 * 1024


def broker_full(here: Stage, size: Size, operator: demo.RunningOperator) -> Outcome:
    """Producers fill a managed Redis with a memory limit (maxmemory below it, noeviction) while no worker
    runs: sends fail with an error, the BrokerMemoryAvailable condition turns False and a Warning Event
    and the memory metrics say why, and the operator opens the broker's memory reserve; workers then
    drain it, every accepted task runs (nothing evicted) and the reserve closes, the condition True again.
    Recovery: workers started to the condition True."""
    outcome = Outcome("broker-full")
    managed = {"managed": {"resources": {"limits": {"memory": BROKER_MEMORY_LIMIT}}}}
    body = manifest("full", [queue("work", replicas=0, concurrency=4)], broker=managed)
    target = here.deploy(body)
    accepted: list[str] = []
    refused = ""
    padding = "x" * PADDING_BYTES
    for _ in range(4000):  # about 250 MiB at most: far past the limit
        try:
            accepted += target.send("work", "noop", 1, padding=padding)
        except Exception as exc:
            refused = f"{type(exc).__name__}: {exc}"
            break
    outcome.expect(bool(refused), "no send was refused")
    outcome.expect("OOM" in refused or "maxmemory" in refused, f"the refusal does not say why: {refused[:200]}")
    full = wait_until(
        lambda: _condition(here, target, BROKER_MEMORY_AVAILABLE).get("status") == "False",
        timeout=4 * TICK_S,
        what="BrokerMemoryAvailable False",
    )
    outcome.expect(bool(full), "no BrokerMemoryAvailable=False")
    outcome.expect(here.wait_for_event(Reason.BROKER_MEMORY_FULL), "no BrokerMemoryFull Event")
    outcome.expect(here.wait_for_event(Reason.BROKER_MEMORY_RESERVE_OPENED), "no BrokerMemoryReserveOpened Event")
    outcome.expect(_broker_memory_metric(here, operator, target) > 0, "no jobqueue_broker_used_memory_bytes series")
    t0 = time.time()
    here.apply(with_queue(body, "work", replicas=2))
    settle(outcome, target, accepted, missing="not every accepted task done (evicted or lost)")
    wait_until(
        lambda: _condition(here, target, BROKER_MEMORY_AVAILABLE).get("status") == "True",
        timeout=120,
        what="BrokerMemoryAvailable True again",
    )
    outcome.recovery_s.append(time.time() - t0)
    outcome.expect(here.wait_for_event(Reason.BROKER_MEMORY_RESERVE_CLOSED), "no BrokerMemoryReserveClosed Event")
    return outcome


def _condition(here: Stage, target: Target, kind: str) -> dict[str, Any]:
    return condition(here.jobqueue(target.deployed.name), kind) or {}


def _broker_memory_metric(here: Stage, operator: demo.RunningOperator, target: Target) -> float:
    """jobqueue_broker_used_memory_bytes of this JobQueue, from the operator Pod running now."""
    pod = demo.operator_pod(here.kube, operator.release, operator.namespace)
    text = requests.get(f"http://{pod['status']['podIP']}:{demo.METRICS_PORT}/metrics", timeout=5).text
    wanted = {"namespace": here.namespace, "jobqueue": target.deployed.name}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "jobqueue_broker_used_memory_bytes" and wanted.items() <= sample.labels.items():
                return float(sample.value)
    return 0.0


# ---- the list ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    name: str
    run: Callable[..., Outcome]
    ci: Size
    soak: Size
    needs_operator: bool = False

    def __call__(self, here: Stage, size: Size, operator: demo.RunningOperator) -> Outcome:
        return self.run(here, size, operator) if self.needs_operator else self.run(here, size)


SCENARIOS: Final = (
    Scenario("worker-killed", worker_killed, Size(60, 2), Size(2500, 5)),
    Scenario("scale-down-busy", scale_down_busy, Size(30, 1), Size(1500, 3)),
    Scenario("rolling-update", rolling_update, Size(200, 1), Size(1800, 3)),
    Scenario("redis-restart", redis_restart, Size(100, 1), Size(1500, 3)),
    Scenario("stranded-queues", stranded_queues, Size(60, 1), Size(900, 1)),
    Scenario("poison-task", poison_task, Size(40, 2), Size(900, 3)),
    Scenario("child-oom-killed", child_oom_killed, Size(30, 1), Size(600, 2)),
    Scenario("operator-killed", operator_killed, Size(60, 1), Size(600, 1), needs_operator=True),
    Scenario("broker-unreachable", broker_unreachable, Size(30, 1), Size(300, 1)),
    Scenario("broker-full", broker_full, Size(0, 1), Size(0, 1), needs_operator=True),
)
