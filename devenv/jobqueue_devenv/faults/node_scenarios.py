"""The node faults: a node's power cut under busy workers, a drain, the operator's leader's node and the
broker's node lost. Each runs on a `node_stage.Rig` (a cluster of three nodes, the operator as the chart
installs it, the ledger on the spare node), in the style of `scenarios`: tasks of one run, the fault, an
`Outcome` with the checker's verdict, the measured times and every bound broken, in words.

Time bounds are the issue's numbers times `Size.slack` (1 at soak size; more at CI size, which shares a
2-core machine with the rest of the suite). docs/faults.md lists them and the measured numbers.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any, Final

from jobqueue_devenv import nodes
from jobqueue_devenv.faults import placement
from jobqueue_devenv.faults.node_stage import (
    SETTLE_TIMEOUT,
    Rig,
    busy_node,
    clear_out_of_service,
    disruption_budget,
    every_worker_pod,
    held_by,
    lead_elsewhere,
    leader,
    mark_out_of_service,
    node_of,
    only_on,
    power_cut,
    ready_elsewhere,
    spread_again,
)
from jobqueue_devenv.faults.scenarios import (
    ACKED_BEFORE_KILL_S,
    RESTART_BOUND_S,
    SAMPLE_S,
    Outcome,
    Size,
    SteadySender,
    condition_reasons,
    deployment_replicas,
    seconds_until,
    settle,
    wait_done,
    with_queue,
)
from jobqueue_devenv.faults.stage import Stage, Target, is_ready, manifest, pause, queue
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.reasons import Reason

REPLACEMENT_BOUND_S: Final = 120.0
"""Replacement workers Ready on the other nodes after a power cut. The operator deletes a lost node's worker
Pods within the redelivery bound, but until the node controller marks the node unreachable (its grace
period, 40-50 s) the scheduler may still pick the dead node for a replacement."""
LEADER_BOUND_S: Final = 15.0
"""The operator's standby leads within this of the leader's node dying (docs/operator.md)."""
SCALE_UP_BOUND_S: Final = 30.0
"""A queue at zero that receives a burst is scaled up within this of the leader's node dying."""
BROKER_NODE_LOST_BOUND_S: Final = 60.0
"""The JobQueue's condition and a Warning Event say the broker's node is lost within this."""
BROKER_BACK_BOUND_S: Final = 120.0
"""After the documented step (the out-of-service taint), the broker serves again from another node within
this: the controller-manager's Pod garbage collector force-deletes the lost Pod (every 20 s), the
StatefulSet makes it anew, Redis loads its append-only file."""
WORKERS: Final = 6
"""Two per node of three (the workers spread over nodes)."""
BROKER_WORKERS: Final = 2
CONCURRENCY: Final = 2
LONG_S: Final = 8.0
"""The tasks running at a power cut: longer than the time from seeing them run to the cut."""
DRAIN_TASK_S: Final = 2.0
"""The drained workers' tasks: far shorter than their grace period, so none may be interrupted."""
DRAIN_RATE: Final = 3.0
"""Tasks per second during a drain: half of what the workers can run (12 slots, 2 s tasks)."""
DRAIN_KUBECTL_TIMEOUT_S: Final = 300


def _bound(size: Size, seconds: float) -> float:
    return seconds * size.slack


def _deploy(here: Stage, body: dict[str, Any], home: str) -> Target:
    """The JobQueue (its queues at zero) with its Redis placed on `home`."""
    with only_on(here.kube, home):
        return here.deploy(body)


def _scale(here: Stage, body: dict[str, Any], target: Target, queue_name: str, workers: int) -> None:
    here.apply(with_queue(body, queue_name, replicas=workers))
    wait_until(
        lambda: len(here.ready_workers(target.deployed.name, queue_name)) >= workers,
        timeout=180,
        what=f"{workers} ready {queue_name} workers",
        interval=0.5,
    )


def _avoid(here: Stage, rig: Rig) -> set[str]:
    """The leader's node, which a scenario that does not mean to kill the operator rather spares."""
    found = leader(here.kube, rig.operator)
    return {found.node} if found else set()


def _replaced(here: Stage, target: Target, node: str) -> bool:
    return ready_elsewhere(here, target, "work", node) >= WORKERS


def _back(target: Target, ids: set[str], before: dict[str, int]) -> bool:
    """Every id started again since `before`, or finished (a task that ended just before the fault)."""
    started, done = target.ledger.started(), target.ledger.done()
    return all(started.get(i, 0) > before.get(i, 0) or done.get(i, 0) > 0 for i in ids)


# ---- a node of busy workers loses power ----------------------------------------------------------------


def node_killed(here: Stage, size: Size, rig: Rig) -> Outcome:
    """The node of (at least) two busy workers (every slot running an 8 s task) powered off under load
    (`nodes.kill`: nothing tells the API server), once per fault, the workers spread anew each time.
    Recovery: the power cut to every task those workers held having started again on another node (or
    finished before the cut), whatever the visibility timeout (an hour here): the operator restores them
    once their heartbeat lapsed and the API server says the node is gone. Replacements Ready on the other
    nodes are measured too (`replacements_ready`). The node is booted again before the next fault."""
    outcome = Outcome("node-killed")
    # A restored task goes to the head of its queue and may be cut off again by the next power cut.
    dead_letter = {"maxWorkerLosses": size.faults + 1}
    body = manifest("nodekill", [queue("work", replicas=0, concurrency=CONCURRENCY, deadLetter=dead_letter)])
    target = _deploy(here, body, rig.spare)
    _scale(here, body, target, "work", WORKERS)
    sent: list[str] = []
    cut_off: set[str] = set()
    for round_ in range(size.faults):
        if round_:
            spread_again(here, target, "work", WORKERS)
        long = target.send("work", "sleep", CONCURRENCY * WORKERS, seconds=LONG_S)
        sent += long + target.send("work", "noop", max(0, size.per_fault() - len(long)))
        # Every slot of every worker there busy: no fetch in flight at the cut (docs/faults.md, "Found by the
        # suite").
        busy = partial(
            busy_node, here, target, "work", spare={rig.spare}, avoid=_avoid(here, rig), least=2,
            holding=CONCURRENCY, whole=True,
        )  # fmt: skip
        node, dead = wait_until(busy, timeout=120, what="a node with two busy workers", interval=0.2)
        before = target.ledger.started()
        with power_cut(here.kube, node) as at:
            held = held_by(target, dead)  # what they held at the cut, as the broker recorded it
            cut_off |= held
            again = seconds_until(
                partial(_back, target, held, before), timeout=180, what="the lost tasks started again",
                interval=0.2, since=at,
            )  # fmt: skip
            restarted = {i for i, n in target.ledger.started().items() if i in held and n > before.get(i, 0)}
            if again is None or restarted:
                outcome.recovery_s.append(float("inf") if again is None else again)
            ready = seconds_until(
                partial(_replaced, here, target, node),
                timeout=300, what="replacements Ready on the other nodes", interval=0.5, since=at,
            )  # fmt: skip
            outcome.measure("replacements_ready", ready)
            outcome.within(ready, _bound(size, REPLACEMENT_BOUND_S), f"replacements Ready after {node} lost power")
    settle(outcome, target, sent, may_restart=cut_off)
    outcome.expect(bool(outcome.recovery_s), "no power cut cut a task off")
    for seconds in outcome.recovery_s:
        outcome.within(seconds, _bound(size, RESTART_BOUND_S), "the lost workers' tasks started again")
    outcome.expect(here.wait_for_event(Reason.WORKER_LOST), "no WorkerLost Event")
    return outcome


# ---- a node drained under a steady load ------------------------------------------------------------------


@dataclass
class _Drain:
    seconds: float
    fewest_ready: int
    error: str


def _drain(here: Stage, target: Target, queue_name: str, node: str) -> _Drain:
    """`kubectl drain` (the eviction API: PodDisruptionBudgets honoured), with the queue's Ready workers
    counted every `SAMPLE_S` while it runs; the node uncordoned afterwards."""
    failed: list[str] = []

    def drain() -> None:
        try:
            here.kube.kubectl(
                "drain", node, "--ignore-daemonsets", "--delete-emptydir-data",
                f"--timeout={DRAIN_KUBECTL_TIMEOUT_S}s",
            )  # fmt: skip
        except RuntimeError as exc:
            failed.append(str(exc))

    ready: list[int] = []
    t0 = time.time()
    thread = threading.Thread(target=drain, name=f"drain-{node}")
    thread.start()
    try:
        while thread.is_alive():
            ready.append(len(here.ready_workers(target.deployed.name, queue_name)))
            pause(SAMPLE_S)
        seconds = time.time() - t0
    finally:
        thread.join()
        here.kube.kubectl("uncordon", node)
    return _Drain(seconds, min(ready, default=0), failed[0] if failed else "")


def node_drained(here: Stage, size: Size, rig: Rig) -> Outcome:
    """A node with busy workers drained (`kubectl drain`: evictions, PodDisruptionBudgets honoured) while
    2 s tasks arrive steadily, once per fault: every evicted worker finishes what it runs (far within its
    grace period), nothing is interrupted or lost, no send is refused, and the queue's Ready workers never
    fall below what its PodDisruptionBudget keeps. Recovery: the drain's start to its end (every worker
    of the node evicted and replaced elsewhere, one budget's worth at a time)."""
    outcome = Outcome("node-drained")
    body = manifest("drained", [queue("work", replicas=0, concurrency=CONCURRENCY)])
    target = _deploy(here, body, rig.spare)
    _scale(here, body, target, "work", WORKERS)
    budget = disruption_budget(here, target, "work")
    outcome.expect(budget is not None, "no PodDisruptionBudget covers the workers")
    allowed = placement.disruptions_allowed(budget or {}, WORKERS)
    outcome.expect(allowed < WORKERS, f"the PodDisruptionBudget {budget} lets every worker go at once")
    fewest = WORKERS
    with SteadySender(target, "work", DRAIN_RATE, seconds=DRAIN_TASK_S) as sender:
        for round_ in range(size.faults):
            if round_:
                spread_again(here, target, "work", WORKERS)
            t0 = time.time()
            busy = partial(busy_node, here, target, "work", spare={rig.spare}, avoid=_avoid(here, rig), least=1)
            node, _held = wait_until(busy, timeout=120, what="a node with a busy worker", interval=0.2)
            drained = _drain(here, target, "work", node)
            outcome.expect(not drained.error, f"kubectl drain {node}: {drained.error}")
            outcome.recovery_s.append(drained.seconds)
            fewest = min(fewest, drained.fewest_ready)
            pause(max(0.0, size.per_fault() / DRAIN_RATE - (time.time() - t0)))  # the rest of the round's load
    settle(outcome, target, sender.sent)
    outcome.expect(not sender.errors, f"{len(sender.errors)} sends refused: {sender.errors[:1]}")
    outcome.expect(not outcome.verdict.interrupted, f"{len(outcome.verdict.interrupted)} tasks interrupted")
    outcome.expect(WORKERS - fewest <= allowed, f"{WORKERS - fewest} workers down at once, the budget allows {allowed}")
    return outcome


# ---- the operator's leader's node loses power -------------------------------------------------------------


def _led_by_another(here: Stage, rig: Rig, old: str) -> bool:
    found = leader(here.kube, rig.operator)
    return found is not None and found.pod != old


def operator_node_killed(here: Stage, size: Size, rig: Rig) -> Outcome:
    """The node of the operator's leader powered off, then a burst sent to a queue at zero, once per fault:
    the standby holds the Lease within 15 s of the power cut (`leader`) and scales the queue up within 30 s
    of it; every task runs while the node is still off. Recovery: the power cut to the queue scaled up."""
    outcome = Outcome("operator-node-killed")
    autoscaling = {"minReplicas": 0, "maxReplicas": 2, "idleSecondsBeforeZero": 2, "targetTasksPerWorker": 20}
    body = manifest("leaderless", [{"name": "burst", "concurrency": 4, "autoscaling": autoscaling}])
    target = _deploy(here, body, rig.spare)
    deployment = naming.worker_deployment(target.deployed.name, "burst")

    def replicas() -> int:
        return deployment_replicas(here, deployment) or 0

    sent: list[str] = []
    for _ in range(size.faults):
        # No worker Pod left at all, those being deleted too: one still ending would run the burst.
        wait_until(
            lambda: replicas() == 0 and not every_worker_pod(here, target, "burst"),
            timeout=SETTLE_TIMEOUT, what="the queue at zero", interval=0.5,
        )  # fmt: skip
        old = lead_elsewhere(here.kube, rig.operator, rig.spare)
        with power_cut(here.kube, old.node) as at:
            burst = target.send("burst", "sleep", size.per_fault(), seconds=0.1)
            sent += burst
            led = seconds_until(
                partial(_led_by_another, here, rig, old.pod), timeout=120, what="the standby leading",
                interval=0.2, since=at,
            )  # fmt: skip
            up = seconds_until(lambda: replicas() >= 1, timeout=180, what="scaled up", interval=0.2, since=at)
            outcome.measure("leader", led)
            outcome.recovery_s.append(float("inf") if up is None else up)
            outcome.within(led, _bound(size, LEADER_BOUND_S), f"the standby leads after {old.node} lost power")
            outcome.within(up, _bound(size, SCALE_UP_BOUND_S), "the queue at zero scaled up")
            outcome.expect(wait_done(target, burst), "the burst did not run while the leader's node was off")
    settle(outcome, target, sent)
    return outcome


# ---- the broker's node loses power ---------------------------------------------------------------------


def _broker_home(here: Stage, rig: Rig) -> str:
    """A node for the broker this scenario kills: not the spare one, not the leader's if another is free."""
    candidates = [name for name in nodes.names(here.kube.directory) if name != rig.spare]
    avoid = _avoid(here, rig)
    return next((name for name in candidates if name not in avoid), candidates[0])


def _all_started(target: Target, ids: list[str]) -> bool:
    return set(ids) <= target.ledger.started().keys()


def _node_lost_said(here: Stage, target: Target) -> bool:
    return Reason.BROKER_NODE_LOST in condition_reasons(here, target)


def _served_elsewhere(here: Stage, target: Target, pod: str, lost: str) -> bool:
    """The broker's Pod Ready on a node other than `lost`, answering (the producer pointed at its new IP)."""
    found = here.kube.get("pods", "-n", here.namespace, "--field-selector", f"metadata.name={pod}")["items"]
    if not found or not is_ready(found[0]) or placement.node_of(found[0]) == lost:
        return False
    here.reconnect(target)
    return bool(target.broker.ping())


def broker_node_killed(here: Stage, size: Size, rig: Rig) -> Outcome:
    """The node of a managed broker (one Redis, append-only file fsynced every second, on a volume) powered
    off while tasks wait in it and its workers run long ones: the JobQueue's BrokerReady condition and a
    Warning Event say `BrokerNodeLost` within 60 s (`condition`, `event`); then the step its message
    documents, the out-of-service taint on the node, and the broker comes back on another node; every task
    acknowledged to its producer more than 1.5 s before the power cut (everysec: Redis loses at most the last
    second or two of writes) runs, with the node still off. Recovery: the taint to the broker serving again.

    At the cut every worker slot is busy, so no worker is fetching: kombu's Redis transport takes a message
    off its list (BRPOP) before the worker records it as unacknowledged, and a fetch whose reply dies with
    the broker's node loses that message (docs/faults.md, "Found by the suite")."""
    outcome = Outcome("broker-node-killed")
    persistent = {"managed": {"persistence": {"enabled": True}}}
    body = manifest("brokerlost", [queue("work", replicas=0, concurrency=CONCURRENCY)], broker=persistent)
    target = _deploy(here, body, _broker_home(here, rig))
    _scale(here, body, target, "work", BROKER_WORKERS)
    redis_pod = f"{naming.redis(target.deployed.name)}-0"
    sent: list[str] = []
    cut_off: set[str] = set()
    for round_ in range(size.faults):
        if round_:
            wait_until(partial(_served_elsewhere, here, target, redis_pod, ""), timeout=180, what="the broker")
        node = node_of(here.kube, here.namespace, redis_pod)
        long = target.send("work", "sleep", CONCURRENCY * BROKER_WORKERS, seconds=LONG_S)
        wait_until(partial(_all_started, target, long), timeout=120, what="every worker slot busy", interval=0.2)
        sent += long + target.send("work", "noop", max(0, size.per_fault() - len(long)))
        not_done = set(sent) - target.ledger.done().keys()
        pause(ACKED_BEFORE_KILL_S)  # the bound is for tasks acknowledged that long before the power cut
        try:
            with power_cut(here.kube, node) as at:
                cut_off |= not_done  # at-least-once: a pop or an ack of the last second may be lost
                said = seconds_until(
                    partial(_node_lost_said, here, target), timeout=180, what="BrokerNodeLost", interval=0.5, since=at
                )
                told = seconds_until(
                    lambda: here.events(Reason.BROKER_NODE_LOST), timeout=60, what="a BrokerNodeLost Event",
                    interval=0.5, since=at,
                )  # fmt: skip
                outcome.measure("condition", said)
                outcome.measure("event", told)
                outcome.within(said, _bound(size, BROKER_NODE_LOST_BOUND_S), "the condition says the node is lost")
                outcome.within(told, _bound(size, BROKER_NODE_LOST_BOUND_S), "a BrokerNodeLost Event")
                step = mark_out_of_service(here.kube, node)
                back = seconds_until(
                    partial(_served_elsewhere, here, target, redis_pod, node), timeout=300,
                    what="the broker serving from another node", interval=0.5, since=step,
                )  # fmt: skip
                outcome.recovery_s.append(float("inf") if back is None else back)
                outcome.within(back, _bound(size, BROKER_BACK_BOUND_S), "the broker back on another node")
                outcome.expect(wait_done(target, sent), "not every persisted task ran while the node was off")
        finally:
            with contextlib.suppress(RuntimeError):
                clear_out_of_service(here.kube, node)
    settle(outcome, target, sent, may_restart=cut_off)
    cleared = seconds_until(
        lambda: not _node_lost_said(here, target), timeout=120, what="BrokerNodeLost cleared", interval=0.5
    )
    outcome.expect(cleared is not None, "the condition still says BrokerNodeLost with the broker back")
    return outcome


# ---- the list ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NodeScenario:
    name: str
    run: Callable[[Stage, Size, Rig], Outcome]
    ci: Size
    soak: Size

    def __call__(self, here: Stage, size: Size, rig: Rig) -> Outcome:
        return self.run(here, size, rig)


CI_SLACK: Final = 2.0
"""At CI size the machine runs the rest of the suite beside: time bounds twice the issue's."""

NODE_SCENARIOS: Final = (
    NodeScenario("operator-node-killed", operator_node_killed, Size(40, 1, CI_SLACK), Size(600, 3)),
    NodeScenario("node-drained", node_drained, Size(60, 1, CI_SLACK), Size(720, 2)),
    NodeScenario("node-killed", node_killed, Size(60, 1, CI_SLACK), Size(1500, 3)),
    NodeScenario("broker-node-killed", broker_node_killed, Size(60, 1, CI_SLACK), Size(1000, 1)),
)
"""Cheapest first."""
