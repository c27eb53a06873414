"""How fast a standby operator takes over: two `jobqueue-operator` processes on one Lease (the chart's
default two replicas, as host processes), the leader killed N times.

Each round kills the leader with SIGKILL (its node losing power looks the same to the API server: the
Lease stops being renewed) and at once applies a new JobQueue, then measures on the host's clock:

- `lease_seconds`: kill -> the standby holds the Lease (at worst lease duration + 2 retry periods: 12 s
  with the defaults, election.py);
- `acted_seconds`: kill -> the new JobQueue has its first status (observedGeneration): the new leader acts.

Then a fresh process replaces the dead one as the standby, and the next round kills the new leader. Last,
`handover_seconds`: the same with SIGTERM (a rollout): the leader releases the Lease on its way out, so the
standby takes it within a retry period. The operators watch a namespace of their own on the cluster
KUBECONFIG points at (else one of their own) and use a real redis-server as the JobQueues' broker.

    PYTHONPATH=devenv .venv/bin/python bench/operator_failover.py [--runs 5] [--json OUT]
    PYTHONPATH=devenv .venv/bin/python -m bench.operator_failover --json OUT
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "operator"), str(REPO / "devenv")]

from jobqueue_devenv import bench_results  # noqa: E402
from jobqueue_devenv.bench_cluster import apply_crd, cluster_for_bench, fresh_namespace, print_seconds  # noqa: E402
from jobqueue_devenv.demo import UNPULLED_IMAGE, jobqueue_document  # noqa: E402
from jobqueue_devenv.operator_process import HostOperator, host_operator  # noqa: E402
from jobqueue_devenv.redis_process import RedisServer  # noqa: E402
from jobqueue_devenv.waiting import wait_until  # noqa: E402
from jobqueue_operator import election  # noqa: E402

RESULTS = REPO / "bench" / "results" / "operator_failover.json"
GROUP, VERSION, PLURAL = "jobqueue.dev", "v1alpha1", "jobqueues"
POLL_SECONDS = 0.05


def _identity(operator: HostOperator) -> str:
    return election.identity({}, socket.gethostname(), operator.process.pid)


class Rig:
    """The operators of one namespace, each in its own exit stack so that one can die and be replaced."""

    def __init__(self, kubeconfig: str, namespace: str, logs: Path) -> None:
        self.kubeconfig, self.namespace, self.logs = kubeconfig, namespace, logs
        self.running: list[tuple[contextlib.ExitStack, HostOperator]] = []
        self.started = 0

    def start(self) -> HostOperator:
        self.started += 1
        stack = contextlib.ExitStack()
        log = self.logs / f"operator-{self.started}.log"
        operator = stack.enter_context(host_operator(self.kubeconfig, self.namespace, log))
        self.running.append((stack, operator))
        return operator

    def forget(self, operator: HostOperator) -> None:
        for stack, known in list(self.running):
            if known is operator:
                stack.close()  # the process has ended; this only waits for it
                self.running.remove((stack, known))

    def close(self) -> None:
        for stack, _ in self.running:
            stack.close()


class Namespace:
    """The bench's namespace: its Lease and its JobQueues, through the API."""

    def __init__(self, api: client.ApiClient, name: str) -> None:
        self.name = name
        self.custom, self.leases = client.CustomObjectsApi(api), client.CoordinationV1Api(api)

    def holder(self) -> str | None:
        try:
            found = self.leases.read_namespaced_lease(election.DEFAULT_LEASE_NAME, self.name).spec.holder_identity
        except client.ApiException:
            return None
        return str(found) if found else None

    def leader(self, operators: list[HostOperator]) -> HostOperator | None:
        return next((o for o in operators if _identity(o) == self.holder()), None)

    def apply(self, jobqueue: str) -> None:
        broker = {"external": {"urlSecretRef": {"name": "broker", "key": "url"}}}
        queues = [{"name": "q", "replicas": 0}]
        body = jobqueue_document(jobqueue, image=UNPULLED_IMAGE, app="tasks.app:app", broker=broker, queues=queues)
        self.custom.create_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, body)

    def acted(self, jobqueue: str) -> bool:
        body = self.custom.get_namespaced_custom_object(GROUP, VERSION, self.name, PLURAL, jobqueue)
        return bool((body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"])


def _seconds_until(start: float, check: Callable[[], object], what: str) -> float:
    wait_until(check, timeout=120, what=what, interval=POLL_SECONDS)
    return round(time.monotonic() - start, 2)


def one_round(here: Namespace, operators: list[HostOperator], jobqueue: str, kill: bool) -> tuple[float, float | None]:
    """Stop the leader (SIGKILL, or SIGTERM when not `kill`) and apply `jobqueue`: seconds until the standby
    holds the Lease, and (killed) until the JobQueue has its status."""
    leader = wait_until(lambda: here.leader(operators), timeout=120, what="a leader")
    (standby,) = [o for o in operators if o is not leader]
    start = time.monotonic()
    if kill:
        leader.process.kill()
    else:
        leader.process.terminate()
    here.apply(jobqueue)
    lease = _seconds_until(start, lambda: here.leader(operators) is standby, "the standby holding the Lease")
    acted = _seconds_until(start, lambda: here.acted(jobqueue), f"{jobqueue} reconciled") if kill else None
    leader.process.wait(60)
    return lease, acted


def measure(kubeconfig: str, runs: int) -> dict[str, Any]:
    lease_seconds: list[float] = []
    acted_seconds: list[float] = []
    handover_seconds: list[float] = []
    api = apply_crd(kubeconfig)
    with (
        fresh_namespace(api, "bench-failover") as name,
        tempfile.TemporaryDirectory(prefix="jq-failover-") as tmp,
        RedisServer.running(Path(tmp), password=None) as redis,
    ):
        here, core = Namespace(api, name), client.CoreV1Api(api)
        core.create_namespaced_secret(here.name, {"metadata": {"name": "broker"}, "stringData": {"url": redis.url}})
        rig = Rig(kubeconfig, here.name, Path(tmp))
        try:
            operators = [rig.start(), rig.start()]
            for round_ in range(2 * runs):
                kill = round_ < runs
                lease, acted = one_round(here, operators, f"round-{round_}", kill)
                (lease_seconds if kill else handover_seconds).append(lease)
                if acted is not None:
                    acted_seconds.append(acted)
                for gone in [o for o in operators if o.process.poll() is not None]:
                    rig.forget(gone)
                    operators.remove(gone)
                operators.append(rig.start())  # the new standby
                print(f"round {round_ + 1}/{2 * runs} ({'SIGKILL' if kill else 'SIGTERM'}): Lease in {lease:.2f} s")
        finally:
            rig.close()
    worst = election.takeover_seconds(election.LEASE_DURATION_SECONDS, election.RETRY_PERIOD_SECONDS)
    return {
        "lease_seconds": lease_seconds,
        "acted_seconds": acted_seconds,
        "handover_seconds": handover_seconds,
        "timings": {
            "lease_duration_seconds": election.LEASE_DURATION_SECONDS,
            "renew_deadline_seconds": election.RENEW_DEADLINE_SECONDS,
            "retry_period_seconds": election.RETRY_PERIOD_SECONDS,
            "worst_case_seconds": worst,
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5, help="leaders killed (and as many handed over cleanly)")
    parser.add_argument("--json", type=Path, default=RESULTS, help=f"where the JSON goes (default {RESULTS})")
    args = parser.parse_args()
    with cluster_for_bench() as state:
        result = measure(state.kubeconfig, args.runs)
    print_seconds(result, ["lease_seconds", "acted_seconds", "handover_seconds"])
    bench_results.write(args.json, {"benchmark": "operator_failover", "runs": args.runs, **result})


if __name__ == "__main__":
    main()
