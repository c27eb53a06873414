"""A real Prometheus server as a process on the host, for tests: scrapes the given targets every second,
and/or the scrape jobs given (e.g. Kubernetes service discovery from the chart's monitors, monitors.py).

The binary comes from `make test-tools` (built from Go modules like the control plane, see binaries.py).
The configuration is written as JSON, which Prometheus reads as the YAML it is.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jobqueue_devenv import binaries
from jobqueue_devenv.processes import free_port, log_tail, terminate
from jobqueue_devenv.waiting import wait_until


@dataclass(frozen=True)
class RunningPrometheus:
    """A started server: its base URL (what a JobQueue's `serverAddress` names) and its log."""

    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def query(self, expression: str) -> dict[str, Any]:
        """The JSON reply of an instant query."""
        return self.api("query", query=expression)

    def query_range(self, expression: str, start: float, end: float, step: float) -> dict[str, Any]:
        """The JSON reply of a range query (an error reply is returned, not raised)."""
        return self.api("query_range", query=expression, start=start, end=end, step=step)

    def api(self, path: str, **params: Any) -> dict[str, Any]:
        """GET /api/v1/<path>?<params> (a list value repeats the parameter); the JSON reply, errors too."""
        address = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params, doseq=True)}"
        try:
            with urllib.request.urlopen(address, timeout=10) as reply:
                payload: dict[str, Any] = json.loads(reply.read())
        except urllib.error.HTTPError as exc:  # 400/422: a bad query; the body says why
            payload = json.loads(exc.read())
        return payload


def config(
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    interval: str = "1s",
    scrape_configs: Sequence[dict[str, Any]] = (),
) -> dict[str, Any]:
    """A scrape job `test` over `targets` (host:port) when there are any, the given scrape jobs, and the
    given rule files."""
    jobs = [{"job_name": "test", "static_configs": [{"targets": list(targets)}]}] if targets else []
    return {
        "global": {"scrape_interval": interval, "evaluation_interval": interval},
        "rule_files": [str(path) for path in rule_files],
        "scrape_configs": [*jobs, *scrape_configs],
    }


@contextmanager
def running_prometheus(
    directory: Path,
    targets: Sequence[str],
    rule_files: Sequence[Path] = (),
    timeout: float = 60,
    scrape_configs: Sequence[dict[str, Any]] = (),
    interval: str = "1s",
    port: int | None = None,
) -> Iterator[RunningPrometheus]:
    """Run Prometheus with its data and log in `directory` until the block ends; yields once it is ready.
    On `port` of 127.0.0.1, else a free one."""
    port = port or free_port()
    config_file = directory / "prometheus.yml"
    config_file.write_text(json.dumps(config(targets, rule_files, interval, scrape_configs), indent=1))
    log = directory / "prometheus.log"
    command = [
        str(binaries.tool("prometheus")),
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address=127.0.0.1:{port}",
    ]
    with log.open("w") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def ready_or_exited() -> bool:
        if process.poll() is not None:
            return True
        with urllib.request.urlopen(f"{url}/-/ready", timeout=1) as reply:
            return bool(reply.status == 200)

    try:
        wait_until(ready_or_exited, timeout=timeout, what="Prometheus /-/ready")
        if process.poll() is not None:
            raise RuntimeError(f"prometheus exited with {process.returncode}: {log_tail(log)}")
        yield RunningPrometheus(url, process, log)
    finally:
        terminate(process)
