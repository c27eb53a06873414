"""Two operator processes against the real cluster: one leads (holds the Lease) and only it acts; when it
is SIGKILLed, the other takes the Lease and acts on a JobQueue applied after. How fast is the benchmark's
business (bench/operator_failover.py), not this test's."""

from __future__ import annotations

import contextlib
import socket
import urllib.request
from pathlib import Path

from kubernetes import client
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import cluster
from jobqueue_devenv.operator_process import HostOperator, host_operator
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import election
from tests.conftest import Kubectl
from tests.integration.operator.conftest import apply_jobqueue, external_jobqueue, get_jobqueue

QUEUES = [{"name": "q", "replicas": 0}]


def _identity(operator: HostOperator) -> str:
    """The holder identity of a host operator (no POD_NAME): election.identity's host and process id."""
    return election.identity({}, socket.gethostname(), operator.process.pid)


def _samples(operator: HostOperator) -> dict[str, float]:
    """Its /metrics, by sample name (the unlabelled series this test reads)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as response:
        text = response.read().decode()
    return {s.name: s.value for f in text_string_to_metric_families(text) for s in f.samples if not s.labels}


def _reconciled(custom: client.CustomObjectsApi, namespace: str, name: str) -> bool:
    body = get_jobqueue(custom, namespace, name)
    return bool((body.get("status") or {}).get("observedGeneration") == body["metadata"]["generation"])


def test_one_of_two_operators_leads_and_the_other_takes_over_when_it_is_killed(
    local_cluster: cluster.ClusterState,
    kubectl: Kubectl,
    api_client: client.ApiClient,
    core: client.CoreV1Api,
    custom: client.CustomObjectsApi,
    operator_namespace: str,
    redis_url: str,
    tmp_path: Path,
) -> None:
    ns = operator_namespace
    leases = client.CoordinationV1Api(api_client)
    core.create_namespaced_secret(ns, {"metadata": {"name": "broker"}, "stringData": {"url": redis_url}})

    def holder() -> str | None:
        try:
            lease = leases.read_namespaced_lease(election.DEFAULT_LEASE_NAME, ns)
        except client.ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return str(lease.spec.holder_identity) if lease.spec.holder_identity else None

    kubeconfig = local_cluster.kubeconfig
    with contextlib.ExitStack() as stack:
        first = stack.enter_context(host_operator(kubeconfig, ns, tmp_path / "operator-1.log"))
        second = stack.enter_context(host_operator(kubeconfig, ns, tmp_path / "operator-2.log"))
        identities = {_identity(first): first, _identity(second): second}

        def elected() -> str | None:
            found = holder()
            return found if found in identities else None

        leader = identities[wait_until(elected, timeout=60, what="one of the two leads")]
        standby = second if leader is first else first

        apply_jobqueue(kubectl, ns, external_jobqueue("before", "broker", QUEUES))
        wait_until(lambda: _reconciled(custom, ns, "before"), timeout=90, what="the leader reconciles 'before'")
        assert _samples(leader)["jobqueue_operator_leader"] == 1
        assert _samples(standby)["jobqueue_operator_leader"] == 0
        # The standby saw the JobQueue (it watches) but reconciled nothing: only the leader writes.
        assert _samples(leader)["jobqueue_reconcile_duration_seconds_count"] > 0
        assert _samples(standby)["jobqueue_reconcile_duration_seconds_count"] == 0

        leader.process.kill()  # SIGKILL: no release, the standby must wait the lease out
        leader.process.wait()
        wait_until(lambda: holder() == _identity(standby), timeout=90, what="the standby holds the Lease")
        apply_jobqueue(kubectl, ns, external_jobqueue("after", "broker", QUEUES))
        wait_until(lambda: _reconciled(custom, ns, "after"), timeout=90, what="the new leader reconciles 'after'")
        assert _samples(standby)["jobqueue_operator_leader"] == 1
        assert _samples(standby)["jobqueue_reconcile_duration_seconds_count"] > 0
        lease = leases.read_namespaced_lease(election.DEFAULT_LEASE_NAME, ns)
        assert lease.spec.lease_transitions >= 1  # counted on each change of holder, as client-go does
        took_over = core.list_namespaced_event(ns, field_selector="reason=LeaderElection").items
        assert f"{_identity(standby)} became leader" in {e.message for e in took_over}


def test_a_clean_shutdown_hands_the_lease_over_at_once(
    local_cluster: cluster.ClusterState, api_client: client.ApiClient, operator_namespace: str, tmp_path: Path
) -> None:
    """SIGTERM (a rollout, `helm upgrade`): the leader releases the Lease after its last write, so the
    standby's next look finds it free; a second operator on another Lease is not affected by either."""
    ns = operator_namespace
    leases = client.CoordinationV1Api(api_client)
    lease_name = "handover"
    args = ["--lease-name", lease_name]

    def holder(name: str = lease_name) -> str | None:
        try:
            found = leases.read_namespaced_lease(name, ns).spec.holder_identity
        except client.ApiException:
            return None
        return str(found) if found else None

    kubeconfig = local_cluster.kubeconfig
    with host_operator(kubeconfig, ns, tmp_path / "other.log", args=["--lease-name", "other"]) as other:
        wait_until(lambda: holder("other") == _identity(other), timeout=60, what="the other install's leader")
        with host_operator(kubeconfig, ns, tmp_path / "old.log", args=args) as old:
            wait_until(lambda: holder() == _identity(old), timeout=60, what="the first operator leads at once")
            with host_operator(kubeconfig, ns, tmp_path / "new.log", args=args) as new:
                assert _samples(new)["jobqueue_operator_leader"] == 0
                old.process.terminate()
                assert old.process.wait(60) in (0, -15)
                assert holder() != _identity(old)  # released before it exited
                wait_until(lambda: holder() == _identity(new), timeout=60, what="the new operator leads")
        assert holder("other") == _identity(other)
