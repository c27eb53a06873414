"""`make prometheus`: a real Prometheus on the host that scrapes the local cluster the way the chart's
monitors say, so you can see your own JobQueues' metrics without installing the Prometheus Operator.

The chart's ServiceMonitor and PodMonitor are rendered with `helm template` (with the values of the
installed release when there is one, so `watch.namespaces` narrows the PodMonitor as it would) and
translated into Kubernetes service-discovery scrape jobs (`monitors.py`, the same relabelling the
Prometheus Operator applies); the chart's alert rules are loaded too. The host reaches Pod IPs on the
local cluster, so every worker Pod and the operator's Pod are scraped directly. Runs until Ctrl-C.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import yaml

from jobqueue_devenv import cluster, demo, monitors
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.paths import CHART
from jobqueue_devenv.progress import say
from jobqueue_devenv.prometheus_process import RunningPrometheus, running_prometheus

RULES_FILE: Final = CHART / "files" / "prometheus_alerts.yaml"
DEFAULT_PORT: Final = 9090
MONITOR_TEMPLATES: Final = ("templates/metrics.yaml", "templates/podmonitor.yaml")


def release_values(kube: demo.Kube, release: str, namespace: str) -> dict[str, Any]:
    """The values the release was installed with (none when it is not installed: the chart's defaults)."""
    try:
        found = yaml.safe_load(kube.helm("get", "values", release, "-n", namespace, "-o", "yaml"))
    except RuntimeError:  # no such release
        return {}
    return dict(found or {})


def render(kube: demo.Kube, release: str, namespace: str, values: Path) -> list[dict[str, Any]]:
    """The chart's ServiceMonitor and PodMonitor for this release (`values`: a file), the monitoring API present."""
    args = ["template", release, str(CHART), "--namespace", namespace, "--values", str(values)]
    for kind in ("ServiceMonitor", "PodMonitor"):
        args += ["--api-versions", f"monitoring.coreos.com/v1/{kind}"]
    args += ["--set", "metrics.serviceMonitor.enabled=true", "--set", "metrics.podMonitor.enabled=true"]
    for template in MONITOR_TEMPLATES:
        args += ["--show-only", template]
    output = kube.helm(*args)
    return [dict(d) for d in monitors.monitors([d for d in yaml.safe_load_all(output) if d])]


@contextlib.contextmanager
def started(
    directory: Path, release: str = demo.RELEASE, namespace: str = demo.OPERATOR_NAMESPACE, port: int = DEFAULT_PORT
) -> Iterator[RunningPrometheus]:
    """Prometheus scraping the local cluster in `directory` (its cluster folder), until the block ends."""
    state = cluster.ClusterState.load(directory)
    if state is None or not cluster.is_healthy(state):
        raise DevenvError(f"no local cluster is running in {directory}", "start it: make cluster-up")
    kube = demo.Kube.for_cluster(state)
    data = directory / "prometheus"
    data.mkdir(exist_ok=True)
    values = data / "release-values.yaml"
    values.write_text(yaml.safe_dump(release_values(kube, release, namespace)))
    jobs = monitors.scrape_configs(render(kube, release, namespace, values), state.kubeconfig)
    try:
        with running_prometheus(data, [], [RULES_FILE], scrape_configs=jobs, interval="15s", port=port) as server:
            yield server
    except RuntimeError as exc:  # it exited: the port taken, most often
        raise DevenvError(str(exc), f"choose another port: make prometheus PORT={port + 1}") from None


def run(directory: Path, release: str, namespace: str, port: int) -> None:
    """`make prometheus`: start it, say where it is, keep it until Ctrl-C."""
    with started(directory, release, namespace, port) as server:
        say(f"Prometheus at {server.url} scrapes the local cluster as the chart's monitors say (release {release}")
        say(f"in {namespace}; worker Pods of every JobQueue it watches). Targets: {server.url}/targets")
        say(f"try: jobqueue_queue_depth, jobqueue_workers; alerts: {server.url}/alerts. Ctrl-C stops it")
        print(server.url, flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            server.process.wait()
    say("Prometheus stopped")
