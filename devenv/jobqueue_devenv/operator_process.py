"""`jobqueue-operator` as a process on the host, for tests and benchmarks.

The one place that knows how to start it, wait until it is live, and stop it. (`make demo` and the e2e
tests run it in the cluster instead, installed with Helm: see `demo.py`.) With `cluster_dir`, it runs
through `python -m jobqueue_devenv exec`, so it resolves `<name>.<namespace>.svc` as a Pod would and
can reach a managed Redis by its Service name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from jobqueue_devenv.processes import free_port, terminate
from jobqueue_devenv.waiting import wait_until

DEVENV_DIR = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class HostOperator:
    """A running operator: its process, log file and ports."""

    process: subprocess.Popen[bytes]
    log: Path
    health_port: int
    metrics_port: int


@contextmanager
def host_operator(
    kubeconfig: str,
    namespace: str,
    log: Path,
    *,
    cluster_dir: str | None = None,
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = 30,
) -> Iterator[HostOperator]:
    """Run `jobqueue-operator` watching `namespace` until the block ends; yields once it is live.

    Each operator gets its own liveness and metrics ports, since several may run on one machine.
    """
    health, metrics = free_port(), free_port()
    operator = [str(Path(sys.executable).parent / "jobqueue-operator"), "--namespace", namespace]
    operator += ["--liveness", f"http://127.0.0.1:{health}/healthz", "--metrics-port", str(metrics), *args]
    command = operator
    if cluster_dir is not None:
        command = [sys.executable, "-m", "jobqueue_devenv", "--dir", cluster_dir, "exec", "--", *operator]
    python_path = os.pathsep.join(filter(None, [str(DEVENV_DIR), os.environ.get("PYTHONPATH")]))
    full_env = dict(os.environ, KUBECONFIG=kubeconfig, PYTHONPATH=python_path, **(env or {}))
    with log.open("w") as output:
        process = subprocess.Popen(command, env=full_env, stdout=output, stderr=subprocess.STDOUT)
    try:
        wait_until(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1).status == 200,
            timeout=timeout,
            what="jobqueue-operator's liveness endpoint",
        )
        yield HostOperator(process, log, health, metrics)
    finally:
        terminate(process)
