"""How fast the workers and the project's producer follow a Redis Sentinel failover: host processes, or the cluster.

A Sentinel group (`jobqueue_devenv.sentinel_process`: three redis-server, three Sentinels, the managed
broker's settings) and one real `jobqueue-worker` on its sentinel:// URL. Each round faults the master
(`kill`: SIGKILL; `freeze`: SIGSTOP, connections left open as when a node dies), and at once sends one task
with the project's producer (it retries until the new master takes it, and waits for a replica to confirm
it), then measures on the host's clock:

- `promoted_seconds`: fault -> the Sentinels name another master that says it is one;
- `service_seconds`: fault -> that task is done (the producer reached the new master, the worker consumed
  from it).

Then the old master comes back (restarted, or woken) as a replica, the group is healthy again, and the next
round waits out Sentinel's own pause between failovers of one master (2 x failover-timeout) before its fault.

    PYTHONPATH=devenv:worker .venv/bin/python bench/broker_failover.py [--runs 5] [--fault kill|freeze|both]
        [--json OUT]

With `--cluster` it measures the managed broker on the local cluster instead (KUBECONFIG's cluster if it has
three nodes, else one started for it), with the fault scenarios' own code and ledger under a steady load sent
by the confirming producer: `broker-master-killed` (`jobqueue_devenv.faults.broker_scenarios`: the HA
broker's master Pod force-deleted `--runs` times) and, as the baseline, `redis-restart` (the single broker's
Pod force-deleted `--runs` times, `jobqueue_devenv.faults.scenarios`): for each, the fault to a task sent
after it started (median, worst) and the lost and duplicated counts.

    PYTHONPATH=devenv:worker:operator .venv/bin/python bench/broker_failover.py --cluster [--runs 20] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(REPO / "worker"), str(REPO / "devenv"), str(REPO / "operator")]

from bench.soak import finish, run_one  # noqa: E402
from jobqueue_devenv import bench_results, cluster  # noqa: E402
from jobqueue_devenv.faults import broker_scenarios, scenarios  # noqa: E402
from jobqueue_devenv.faults.node_stage import bench_rig  # noqa: E402
from jobqueue_devenv.processes import free_port, stop_group  # noqa: E402
from jobqueue_devenv.sentinel_process import SentinelGroup  # noqa: E402
from jobqueue_devenv.waiting import wait_until  # noqa: E402
from jobqueue_worker import failover, producer, records  # noqa: E402

RESULTS = REPO / "bench" / "results" / "broker_failover.json"
WORKER = str(Path(sys.executable).with_name("jobqueue-worker"))
QUEUE = "failover"


@contextlib.contextmanager
def worker(group: SentinelGroup, logs: Path) -> Iterator[subprocess.Popen[bytes]]:
    """One demo-app worker on the group's sentinel:// URL, as the operator would configure it."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("JOBQUEUE_")}
    env.update(
        JOBQUEUE_APP="jobqueue_worker.demo:app",
        JOBQUEUE_QUEUE=QUEUE,
        JOBQUEUE_BROKER_URL=group.sentinel_url(),
        JOBQUEUE_METRICS_PORT=str(free_port(host="")),
        POD_NAME="bench-worker",
    )
    with (logs / "worker.log").open("ab") as log:
        proc = subprocess.Popen([WORKER], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        yield proc
    finally:
        stop_group(proc)


def done(group: SentinelGroup, run_id: str) -> int:
    return len(records.read(group.master().client(), run_id, records.DONE))


def one_round(group: SentinelGroup, fault: str) -> dict[str, float]:
    app = producer.producer_app(group.sentinel_url())
    try:
        with failover.watching(app):
            warm = uuid.uuid4().hex  # the producer and the worker hold connections to the master, as in service
            producer.send(app, QUEUE, "noop", 1, run_id=warm, ignore_result=True)
            wait_until(lambda: done(group, warm), timeout=60, what="a task before the fault")
            started = time.monotonic()
            old = group.kill_master() if fault == "kill" else group.freeze_master()
            run_id = uuid.uuid4().hex
            with ThreadPoolExecutor(1) as sending:  # the send blocks until the new master takes it
                sent = sending.submit(producer.send, app, QUEUE, "noop", 1, run_id=run_id, ignore_result=True)
                group.wait_for_new_master(old)
                promoted = time.monotonic() - started
                sent.result()
            wait_until(lambda: done(group, run_id), timeout=120, what="a task after the fault", interval=0.05)
            service = time.monotonic() - started
    finally:
        app.close()
    if fault == "kill":
        group.restart(old[1])
    else:
        group.thaw(old[1])
    group.wait_healthy(timeout=120)
    pause = 2 * group.failover_timeout_ms / 1000 - (time.monotonic() - started)
    if pause > 0:  # Sentinel starts no new failover of the same master before this (its own rule)
        time.sleep(pause)
    return {"promoted_seconds": round(promoted, 2), "service_seconds": round(service, 2)}


CLUSTER_TASKS_PER_RUN = 50
"""Tasks of the steady load per fault on the cluster (4 a second: a round lasts at least the failover)."""


def on_cluster(runs: int, path: Path) -> int:
    """The HA broker's master killed `runs` times and the single broker's Pod `runs` times, on the cluster;
    exit 1 when a task was lost or a bound broken (as `bench.soak`)."""
    kubeconfig = os.environ.get("KUBECONFIG")
    state = cluster.ClusterState.load(Path(kubeconfig).parent) if kubeconfig else None
    size = scenarios.Size(runs * CLUSTER_TASKS_PER_RUN, runs)
    logs = path.parent / "broker-failover-logs"
    logs.mkdir(parents=True, exist_ok=True)
    started = time.time()
    with bench_rig(state, "brokerfo", logs / "operator.log") as (rig, prefix):
        ha = partial(broker_scenarios.broker_master_killed, size=size, rig=rig)
        single = partial(scenarios.redis_restart, size=size)
        outcomes = [
            run_one(rig.kube, prefix, rig.ledger_url, "broker-master-killed", size, ha),
            run_one(rig.kube, prefix, rig.ledger_url, "redis-restart", size, single),
        ]
    found = {o.scenario: o.row() for o in outcomes}
    for name, row in found.items():
        print(f"{name:<22} service back median {row['recovery_median_s']} s, worst {row['recovery_worst_s']} s; "
              f"{row['tasks']} tasks, {row['lost']} lost, {row['duplicated']} duplicated")  # fmt: skip
    measured = {"high_availability": found["broker-master-killed"], "single_broker_baseline": found["redis-restart"]}
    return finish(outcomes, "broker_failover", started, path, mode="cluster", runs=runs, **measured)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="failovers per kind of fault")
    parser.add_argument("--fault", choices=("kill", "freeze", "both"), default="both")
    parser.add_argument("--cluster", action="store_true", help="the managed broker on the local cluster")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args()
    if args.cluster:
        sys.exit(on_cluster(args.runs, args.json))
    faults = ("kill", "freeze") if args.fault == "both" else (args.fault,)
    result: dict[str, Any] = {}
    logs = Path(tempfile.mkdtemp(prefix="broker-failover-"))
    print(f"logs: {logs}", flush=True)  # kept: the worker's and every member's
    with SentinelGroup.running(logs / "group") as group, worker(group, logs):
        for fault in faults:
            rounds = []
            for index in range(args.runs):
                rounds.append(one_round(group, fault))
                print(f"{fault} {index + 1}/{args.runs}: {rounds[-1]}", flush=True)
            result[fault] = {"rounds": rounds}
            for key in ("promoted_seconds", "service_seconds"):
                values = [one[key] for one in rounds]
                result[fault][key] = {"median": statistics.median(values), "worst": max(values)}
                print(f"{fault:<7}{key:<18} median {statistics.median(values):6.2f} s   worst {max(values):6.2f} s")
    settings = {"down_after_ms": SentinelGroup.down_after_ms, "failover_timeout_ms": SentinelGroup.failover_timeout_ms}
    bench_results.write(args.json, {"benchmark": "broker_failover", "runs": args.runs, "sentinel": settings, **result})


if __name__ == "__main__":
    main()
