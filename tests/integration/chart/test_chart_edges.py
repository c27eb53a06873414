"""The chart's edges (issue 19, point 12): `helm template` works without `--kube-version`, and NOTES.txt says
which monitoring objects the values enabled but a cluster without the Prometheus Operator's API left out
(it said nothing: the `--set`s silently created nothing)."""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from jobqueue_devenv import cluster
from jobqueue_devenv.paths import CHART
from tests.conftest import helm

MONITORS = ("metrics.serviceMonitor.enabled=true", "metrics.podMonitor.enabled=true", "prometheusRule.enabled=true")
NOT_CREATED = "MONITORING NOT CREATED"


def _sets(*values: str) -> list[str]:
    return [flag for value in values for flag in ("--set", value)]


def _notes(tmp_path: Path, *flags: str) -> str:
    """NOTES.txt as Helm renders it for `flags` (helm template prints no NOTES: a copy of the chart carries
    the same text in a ConfigMap, rendered with the same values and capabilities)."""
    chart = tmp_path / "chart"
    shutil.copytree(CHART, chart)
    notes = (chart / "templates" / "NOTES.txt").read_text()
    body = "\n".join(f"    {line}" for line in notes.splitlines())
    (chart / "templates" / "zz-notes.yaml").write_text(
        f"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n  notes: |\n{body}\n"
    )
    output = helm(
        "template", "jq", str(chart), "-n", "jobqueue-system", "--show-only", "templates/zz-notes.yaml", *flags
    )
    (document,) = [d for d in yaml.safe_load_all(output.stdout) if d]
    return str(document["data"]["notes"])


def test_helm_template_needs_no_kube_version() -> None:
    done = helm("template", "jq", str(CHART), "-n", "jobqueue-system", check=False)
    assert done.returncode == 0, done.stderr
    assert "kind: Deployment" in done.stdout


def test_the_notes_name_the_monitors_a_cluster_without_the_api_left_out(tmp_path: Path) -> None:
    notes = _notes(tmp_path, *_sets(*MONITORS))
    assert f"{NOT_CREATED}: PodMonitor, PrometheusRule, ServiceMonitor." in notes
    assert "helm upgrade" in notes


def test_the_notes_name_only_the_monitors_enabled(tmp_path: Path) -> None:
    notes = _notes(tmp_path, *_sets("metrics.serviceMonitor.enabled=true"))
    assert f"{NOT_CREATED}: ServiceMonitor." in notes


def test_the_notes_say_nothing_of_monitoring_when_the_api_exists_or_nothing_is_enabled(tmp_path: Path) -> None:
    apis = [
        f
        for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule")
        for f in ("--api-versions", f"monitoring.coreos.com/v1/{kind}")
    ]
    assert NOT_CREATED not in _notes(tmp_path / "with-api", *_sets(*MONITORS), *apis)
    assert NOT_CREATED not in _notes(tmp_path / "default")


@pytest.mark.cluster
def test_an_install_on_a_cluster_without_the_prometheus_operator_says_so(local_cluster: cluster.ClusterState) -> None:
    """The real NOTES of a (server dry-run) install on the local cluster, which has no monitoring API."""
    release = f"jqnotes-{uuid.uuid4().hex[:5]}"
    done = helm(
        "install", release, str(CHART), "-n", "default", "--dry-run=server", *_sets(*MONITORS),
        kubeconfig=local_cluster.kubeconfig,
    )  # fmt: skip
    assert f"{NOT_CREATED}: PodMonitor, PrometheusRule, ServiceMonitor." in done.stdout
    assert "kind: ServiceMonitor" not in done.stdout
