"""The chart's default install on the local cluster, from the operator image: two operator Pods Running, one
holding the Lease and acting (its /metrics say so), the other standing by, a PodDisruptionBudget over
both; the leader's Pod deleted, the other leads."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import cluster, demo
from jobqueue_devenv.waiting import wait_until


def _leader_gauge(pod: dict[str, object]) -> float:
    ip = pod["status"]["podIP"]  # type: ignore[index]
    text = requests.get(f"http://{ip}:{demo.METRICS_PORT}/metrics", timeout=5).text
    (value,) = [
        s.value for f in text_string_to_metric_families(text) for s in f.samples if s.name == "jobqueue_operator_leader"
    ]
    return float(value)


@pytest.mark.cluster
def test_two_replicas_one_leader_and_a_disruption_budget(local_cluster: cluster.ClusterState, tmp_path: Path) -> None:
    demo.require_images()
    kube = demo.Kube.for_cluster(local_cluster)
    release = f"jqha-{uuid.uuid4().hex[:6]}"
    with demo.operator(kube, [f"{release}-*"], tmp_path / "operator.log", release, release) as running:
        pods = demo.operator_pods(kube, release, release)
        assert len(pods) == 2
        assert all(p["status"]["phase"] == "Running" for p in pods)
        leader = demo.operator_pod(kube, release, release)
        (standby,) = [p for p in pods if p["metadata"]["name"] != leader["metadata"]["name"]]
        assert leader["metadata"]["name"] == running.pod
        assert (_leader_gauge(leader), _leader_gauge(standby)) == (1.0, 0.0)
        budget = kube.get("pdb", f"{release}-jobqueue-operator", "-n", release)
        assert budget["spec"]["maxUnavailable"] == 1

        def healthy() -> int:
            return int(kube.get("pdb", budget["metadata"]["name"], "-n", release)["status"].get("currentHealthy", 0))

        wait_until(lambda: healthy() == 2, timeout=60, what="the budget counting both replicas healthy")

        kube.kubectl("delete", "pod", leader["metadata"]["name"], "-n", release, "--wait=false")
        new = wait_until(lambda: demo.operator_pod(kube, release, release), timeout=120, what="a leader again")
        assert new["metadata"]["name"] == standby["metadata"]["name"]
        assert _leader_gauge(new) == 1.0
