"""The live monitoring scenario, once per session: the chart's operator, a real Prometheus scraping it and
the workers through Kubernetes service discovery, a JobQueue and a burst through it (see
jobqueue_monitoring.scenario)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from jobqueue_devenv import cluster, demo
from jobqueue_monitoring import scenario

PREFIX = f"mon-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="session")
def kube(local_cluster: cluster.ClusterState) -> demo.Kube:
    return demo.Kube.for_cluster(local_cluster)


@pytest.fixture(scope="session")
def live(kube: demo.Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[scenario.Live]:
    """Everything running, the burst sent, drained and scaled back to zero."""
    with scenario.running(kube, tmp_path_factory.mktemp("monitoring"), PREFIX) as running:
        scenario.burst(running)
        yield running
