"""The managed highly available broker's faults: its master Pod force-deleted, its master's node powered off,
a replica Pod force-deleted, each under a steady load sent by the project's confirming producer
(`jobqueue_worker.confirm`: LPUSH + WAIT, a send reported done only once a replica holds it).

They run on the node scenarios' `Rig` (three nodes, the operator as the chart installs it, the ledger on the
spare node) in the style of `node_scenarios`, and judge with the same checker. The JobQueue's three Redis
members and three Sentinels are spread one per node (`podAntiAffinity: required`); its workers run on the
spare node, so a power cut takes a broker member and a Sentinel and nothing else of the JobQueue: what is
measured is the broker's failover, not worker redelivery (the node scenarios measure that).

The bounds are the issue's: the service back (a send acknowledged and a task started) within 15 s median
and 30 s worst of the fault, times `Size.slack`; no task lost among the sends the producer acknowledged;
a task runs twice only if it was in flight at the fault: sent and not done, or being sent (kombu retries
a publish whose reply the failover cut off, and the old master may have taken and replicated the first).
A lost replica changes nothing: the master keeps a replica in sync, so sends go on being confirmed and no
failover happens.

The host resolves the names the Sentinels answer with (`cluster_names.resolved`); the producer and the broker
client go through the Sentinels exactly as the workers do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import time
import traceback
from collections.abc import Iterator
from functools import partial
from typing import Any, Final

import redis
import redis.sentinel

from jobqueue_devenv import demo
from jobqueue_devenv.faults import cluster_names
from jobqueue_devenv.faults.checker import spread
from jobqueue_devenv.faults.node_scenarios import CI_SLACK, NodeScenario
from jobqueue_devenv.faults.node_stage import Rig, only_on, power_cut
from jobqueue_devenv.faults.scenarios import (
    Outcome,
    Size,
    SteadySender,
    seconds_until,
    settle,
    wait_done,
    with_queue,
)
from jobqueue_devenv.faults.stage import Stage, Target, is_ready, manifest, pause, queue
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker, naming
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import SENTINEL_MEMBERS, HighAvailability
from jobqueue_worker import contract, producer

SERVICE_MEDIAN_BOUND_S: Final = 15.0
"""The issue's bound: a send acknowledged and a task started within this of a fault, the median of them."""
SERVICE_WORST_BOUND_S: Final = 30.0
"""The same, the worst of them."""
REPLICA_LOST_BOUND_S: Final = 5.0
"""A replica's loss is no fault for the service: a send acknowledged and a task started within this."""
QUEUE: Final = "work"
WORKERS: Final = 2
CONCURRENCY: Final = 2
RATE: Final = 4.0
"""Sends per second: a fifth of what the workers can run (4 slots, 0.2 s tasks), so a task sent is started at
once whenever the broker serves."""
TASK_S: Final = 0.2
SERVICE_TIMEOUT_S: Final = 120.0
HEALTHY_TIMEOUT_S: Final = 240.0
BETWEEN_FAILOVERS_S: Final = (
    HighAvailability().down_after_milliseconds + 2 * HighAvailability().failover_timeout_milliseconds
) / 1000
"""Sentinel starts no new failover of a master within twice its failover-timeout of the last one's start
(its own rule), and a failover starts down-after-milliseconds after the fault: the next fault waits this long
after the last, or it would measure that rule, not the failover."""
BROKER_CLIENT_TIMEOUT_S: Final = 5.0


def _body(name: str) -> dict[str, Any]:
    """A JobQueue whose broker is the managed HA one (no volumes: the members live one per node and a lost
    one comes back empty and resyncs from the master; what survives is what a replica holds)."""
    high = {"enabled": True, "podAntiAffinity": "required"}
    brokered = {"managed": {"persistence": {"enabled": False}, "highAvailability": high}}
    return manifest(name, [queue(QUEUE, replicas=0, concurrency=CONCURRENCY)], broker=brokered)


@contextlib.contextmanager
def _deploy(here: Stage, rig: Rig, name: str) -> Iterator[Target]:
    """The JobQueue Ready, its workers on the spare node, and a `Target` whose producer and broker client go
    through the Sentinels (the Secret's sentinel:// URL and master name, as a user's producer would)."""
    body = _body(name)
    target = here.deploy(body)
    with only_on(here.kube, rig.spare):  # the workers there: a power cut takes a broker member, no worker
        here.apply(with_queue(body, QUEUE, replicas=WORKERS))
        wait_until(
            lambda: len(here.ready_workers(name, QUEUE)) >= WORKERS, timeout=180, what="the workers Ready", interval=0.5
        )
    secret = here.kube.get("secret", naming.redis_secret(name), "-n", here.namespace)["data"]
    url = base64.b64decode(secret[naming.URL_KEY]).decode()
    master_name = base64.b64decode(secret[naming.MASTER_NAME_KEY]).decode()
    with (
        cluster_names.resolved(here.kube.directory),
        broker.client_for(url, BROKER_CLIENT_TIMEOUT_S, master_name) as master,
    ):
        target.app.close()
        target.deployed.redis.close()  # the Deployer's client, on the first member's Pod IP
        target.app = producer.producer_app(url, result_backend=here.ledger_url, master_name=master_name)
        target.deployed.url, target.deployed.redis = url, master
        wait_until(partial(_healthy, here, target), timeout=HEALTHY_TIMEOUT_S, what="the broker group healthy")
        yield target


def _member_names(here: Stage, target: Target) -> list[str]:
    return sorted(pod["metadata"]["name"] for pod in _pods(here, target, naming.BROKER))


def _pods(here: Stage, target: Target, component: str) -> list[dict[str, Any]]:
    selector = f"{naming.JOBQUEUE_LABEL}={target.deployed.name},{naming.COMPONENT_LABEL}={component}"
    pods = here.kube.get("pods", "-n", here.namespace, "-l", selector)["items"]
    return [pod for pod in pods if not pod["metadata"].get("deletionTimestamp")]


def master_pod(target: Target) -> str:
    """The member Pod the Sentinels name master now (they answer with its DNS name, the Pod's name first)."""
    pool = target.broker.connection_pool
    if not isinstance(pool, redis.sentinel.SentinelConnectionPool):
        raise TypeError(f"not a Sentinel client: {pool}")
    host, _port = pool.get_master_address()  # type: ignore[no-untyped-call]
    return str(host).split(".", 1)[0]


def _moved(target: Target, old: str) -> bool:
    return master_pod(target) != old


def _replicas_in_sync(target: Target) -> int:
    """Replicas the master sees online (INFO replication on the master the Sentinels name)."""
    info: dict[str, Any] = target.broker.info("replication")
    if info.get("role") != "master":
        return -1
    return sum(1 for key, value in info.items() if key.startswith("slave") and value.get("state") == "online")


def _healthy(here: Stage, target: Target) -> bool:
    """Every member and Sentinel Ready and the master with both replicas online: what a fault starts from."""
    ready = [len([p for p in _pods(here, target, c) if is_ready(p)]) for c in (naming.BROKER, naming.SENTINEL)]
    return ready == [SENTINEL_MEMBERS, SENTINEL_MEMBERS] and _replicas_in_sync(target) == SENTINEL_MEMBERS - 1


def _answers(address: str) -> bool:
    """Whether a Redis listens at the Pod IP `address` (an answer without the password counts)."""
    client = redis.Redis(address, redis_build.PORT, socket_timeout=1, socket_connect_timeout=1)
    try:
        client.ping()
    except redis.ResponseError:  # NOAUTH: it answers
        return True
    except redis.RedisError:
        return False
    finally:
        client.close()
    return True


def _silent(address: str) -> bool:
    return not _answers(address)


def _started(target: Target, ids: list[str]) -> bool:
    return set(ids) <= target.ledger.started().keys()


def service_back(target: Target, since: float, errors: list[str]) -> tuple[float | None, float | None, list[str]]:
    """Seconds from `since` (the fault) until a task sent after it was acknowledged by the confirming producer,
    and until a worker started it, and that task's id; None for a time not within SERVICE_TIMEOUT_S. A
    refused send (retries exhausted, no replica confirmed it) is noted in `errors` and tried again."""
    deadline = since + SERVICE_TIMEOUT_S
    while time.time() < deadline:
        try:
            ids = target.send(QUEUE, "noop", 1)
        except Exception as exc:  # the producer said no: not acknowledged, so not a loss; counted, tried again
            errors.append(f"{type(exc).__name__}: {exc}")
            demo.say(f"a send refused {time.time() - since:.1f} s after the fault:\n{traceback.format_exc()}")
            continue
        acknowledged = time.time() - since
        left = max(1.0, deadline - time.time())
        back = seconds_until(partial(_started, target, ids), timeout=left, what="a task started", interval=0.1)
        return acknowledged, (None if back is None else time.time() - since), ids
    return None, None, []


def _whereabouts(target: Target, ids: frozenset[str]) -> str:
    """Where each of `ids` (lost: acknowledged, never done) is on the master now: still in its queue, held
    (kombu's `unacked`), or nowhere; for the problem's text, while the broker still runs."""
    if not ids:
        return ""
    places: dict[str, str] = {}
    for key in demo.queue_keys(QUEUE):
        for raw in target.broker.lrange(key, 0, -1):
            places.setdefault(json.loads(raw).get("headers", {}).get("id", ""), f"in {key}")
    for raw in target.broker.hvals(contract.UNACKED):
        places.setdefault(json.loads(raw)[0].get("headers", {}).get("id", ""), "held (unacked)")
    return "; ".join(f"{task}: {places.get(task, 'nowhere')}" for task in sorted(ids)[:5])


def _judge(outcome: Outcome, size: Size, refused: list[str]) -> None:
    """The issue's service bounds over every fault (median and worst), and no send refused: the producer
    retries a send for about 20 s (`producer.PUBLISH_RETRY_POLICY`), longer than a failover should take."""
    times = spread(outcome.recovery_s)
    outcome.expect(bool(outcome.recovery_s), "no fault measured")
    outcome.within(times["median"], SERVICE_MEDIAN_BOUND_S * size.slack, "service back after the fault (median)")
    outcome.within(times["worst"], SERVICE_WORST_BOUND_S * size.slack, "service back after the fault (worst)")
    outcome.expect(not refused, f"{len(refused)} sends refused: {refused[:1]}")


def _between(here: Stage, target: Target, last_fault: float) -> None:
    """Before the next fault: the group healthy again and Sentinel's pause between failovers over."""
    wait_until(partial(_healthy, here, target), timeout=HEALTHY_TIMEOUT_S, what="the broker group healthy again")
    pause(max(0.0, last_fault + BETWEEN_FAILOVERS_S - time.time()))


def _failovers(here: Stage, size: Size, rig: Rig, name: str, node_cut: bool) -> Outcome:
    """The master (its Pod force-deleted, or its node powered off) under a steady load, `size.faults` times."""
    outcome = Outcome(name)
    refused: list[str] = []
    probes: list[str] = []
    in_flight: set[str] = set()
    with _deploy(here, rig, "brokerha") as target:
        with SteadySender(target, QUEUE, RATE, seconds=TASK_S) as sender:
            last = 0.0
            for round_ in range(size.faults):
                if round_:
                    _between(here, target, last)
                t0 = time.time()
                old = master_pod(target)
                address = here.kube.get("pod", old, "-n", here.namespace)["status"]["podIP"]
                in_flight |= set(sender.sent) - target.ledger.done().keys()
                count = len(sender.sent)
                with contextlib.ExitStack() as fault:
                    if node_cut:
                        node = _node_of(here, old)
                        last = fault.enter_context(power_cut(here.kube, node))
                    else:
                        last = here.force_delete("pod", old)
                    # A probe the old master still took would measure nothing: it is gone first.
                    wait_until(partial(_silent, address), timeout=60, what=f"{old} gone", interval=0.1)
                    acknowledged, back, ids = service_back(target, last, refused)
                    outcome.measure("acknowledged", acknowledged)
                    probes += ids
                    # Being sent across the failover: kombu retries a publish whose reply was lost, so one the
                    # old master had taken (and replicated) may be delivered twice.
                    in_flight |= set(sender.sent[count:]) | set(ids)
                    outcome.recovery_s.append(float("inf") if back is None else back)
                    # The Sentinels switch about a second apart: one may still name the old master a moment.
                    new = seconds_until(partial(_moved, target, old), timeout=60, what="another master", interval=0.5)
                    outcome.expect(new is not None, f"no failover: {old} still the master")
                    demo.say(
                        f"{name} {round_ + 1}/{size.faults}: {old} -> {master_pod(target)}, "
                        f"acknowledged {acknowledged} s, started {back} s"
                    )
                    if node_cut:  # everything acknowledged runs while the node is still off
                        outcome.expect(
                            wait_done(target, [*sender.sent, *probes]), "not every task ran with the node off"
                        )
                pause(max(0.0, size.per_fault() / RATE - (time.time() - t0)))  # the rest of the round's load
            # Sends block while there is no master, so a failover can eat a round's time: the load runs on
            # until the scenario's size is sent.
            wait_until(
                lambda: len(sender.sent) + len(probes) >= size.tasks,
                timeout=size.tasks / RATE + HEALTHY_TIMEOUT_S,
                what=f"{size.tasks} tasks sent",
            )
        sent = [*sender.sent, *probes]
        settle(outcome, target, sent, may_restart=in_flight)
        outcome.expect(
            not outcome.verdict.lost, f"acknowledged, never done: {_whereabouts(target, outcome.verdict.lost)}"
        )
        _judge(outcome, size, [*refused, *sender.errors])
    return outcome


def _node_of(here: Stage, pod: str) -> str:
    return str(here.kube.get("pod", pod, "-n", here.namespace)["spec"]["nodeName"])


def broker_master_killed(here: Stage, size: Size, rig: Rig) -> Outcome:
    """The master's Pod force-deleted (grace 0: its processes SIGKILLed, connections reset) under a steady
    load, once per fault: the Sentinels promote a replica, the producer's sends block until it takes them,
    the workers follow by themselves. Recovery: the delete to a task sent after it started."""
    return _failovers(here, size, rig, "broker-master-killed", node_cut=False)


def broker_master_node_killed(here: Stage, size: Size, rig: Rig) -> Outcome:
    """The master's node powered off (`nodes.kill`: connections to it hang rather than reset, as a frozen
    machine's do) under a steady load, once per fault; every acknowledged task runs with the node still off.
    Recovery: the power cut to a task sent after it started."""
    return _failovers(here, size, rig, "broker-master-node-killed", node_cut=True)


def broker_replica_lost(here: Stage, size: Size, rig: Rig) -> Outcome:
    """A replica's Pod force-deleted under a steady load, once per fault: no failover, no refused send, a
    send acknowledged and a task started within 5 s. Recovery: the delete to a task sent after it started."""
    outcome = Outcome("broker-replica-lost")
    refused: list[str] = []
    probes: list[str] = []
    with _deploy(here, rig, "replica") as target:
        with SteadySender(target, QUEUE, RATE, seconds=TASK_S) as sender:
            for round_ in range(size.faults):
                if round_:
                    wait_until(
                        partial(_healthy, here, target), timeout=HEALTHY_TIMEOUT_S, what="the group healthy again"
                    )
                t0 = time.time()
                master = master_pod(target)
                replica = next(name for name in _member_names(here, target) if name != master)
                at = here.force_delete("pod", replica)
                _acknowledged, back, ids = service_back(target, at, refused)
                probes += ids
                outcome.recovery_s.append(float("inf") if back is None else back)
                outcome.within(back, REPLICA_LOST_BOUND_S * size.slack, f"service back with replica {replica} lost")
                outcome.expect(master_pod(target) == master, f"a failover from {master} on a replica's loss")
                pause(max(0.0, size.per_fault() / RATE - (time.time() - t0)))
        settle(outcome, target, [*sender.sent, *probes])
        outcome.expect(
            not outcome.verdict.lost, f"acknowledged, never done: {_whereabouts(target, outcome.verdict.lost)}"
        )
        _judge(outcome, size, [*refused, *sender.errors])
        outcome.expect(not outcome.verdict.interrupted, f"{len(outcome.verdict.interrupted)} tasks ran twice")
    return outcome


BROKER_SCENARIOS: Final = (
    NodeScenario("broker-replica-lost", broker_replica_lost, Size(20, 1, CI_SLACK), Size(300, 3)),
    NodeScenario("broker-master-killed", broker_master_killed, Size(20, 1, CI_SLACK), Size(1000, 10)),
    NodeScenario("broker-master-node-killed", broker_master_node_killed, Size(20, 1, CI_SLACK), Size(500, 3)),
)
"""Cheapest first. At CI size one fault each (the module takes about 5 minutes, most of it the three
JobQueues' start); at soak size the master is killed ten times."""
