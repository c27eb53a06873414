"""Startup, readiness and liveness probes: when to probe and what the results mean (pure), and the probing
itself."""

from __future__ import annotations

import http.client
import socket
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ProbeSpec:
    """The timing fields of a Kubernetes probe, with the API's defaults."""

    initial_delay: float = 0.0
    period: float = 10.0
    timeout: float = 1.0
    success_threshold: int = 1
    failure_threshold: int = 3

    @classmethod
    def from_api(cls, probe: Mapping[str, Any]) -> ProbeSpec:
        return cls(
            initial_delay=float(probe.get("initialDelaySeconds") or 0),
            period=float(probe.get("periodSeconds") or 10),
            timeout=float(probe.get("timeoutSeconds") or 1),
            success_threshold=int(probe.get("successThreshold") or 1),
            failure_threshold=int(probe.get("failureThreshold") or 3),
        )


@dataclass
class ProbeTracker:
    """Consecutive results of one probe of one container run, and the verdict they add up to.

    A readiness probe starts as failing (not ready until the first success), a liveness probe as
    passing (alive until `failure_threshold` failures in a row), as in the kubelet. A startup probe starts as
    failing too: until it passes, neither of the others runs (a slow start is not a dead container), and
    when it has `given_up` the container is restarted.
    """

    spec: ProbeSpec
    passing: bool
    successes: int = 0
    failures: int = 0
    last_run: float | None = None

    def due(self, now: float, started_at: float) -> bool:
        if now - started_at < self.spec.initial_delay:
            return False
        return self.last_run is None or now - self.last_run >= self.spec.period

    @property
    def given_up(self) -> bool:
        """`failure_threshold` failures in a row: for a startup probe, the container is restarted."""
        return self.failures >= self.spec.failure_threshold

    def record(self, ok: bool, now: float) -> bool:
        """Add one result; returns the verdict."""
        self.last_run = now
        if ok:
            self.successes, self.failures = self.successes + 1, 0
            if self.successes >= self.spec.success_threshold:
                self.passing = True
        else:
            self.successes, self.failures = 0, self.failures + 1
            if self.failures >= self.spec.failure_threshold:
                self.passing = False
        return self.passing


def resolve_port(port: int | str, container: Mapping[str, Any]) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for declared in container.get("ports") or []:
        if declared.get("name") == port:
            return int(declared["containerPort"])
    raise ValueError(f"container has no port named {port!r}")


def http_get(host: str, port: int, path: str, timeout: float, headers: Sequence[Mapping[str, str]] = ()) -> bool:
    """Success is a status from 200 to 399, as in the kubelet."""
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path or "/", headers={h["name"]: h["value"] for h in headers})
        return 200 <= connection.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        connection.close()


def tcp_connect(host: str, port: int, timeout: float) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def run_exec(argv: Sequence[str], env: Mapping[str, str], cwd: str, timeout: float) -> bool:
    """Success is exit code 0 within the timeout. `argv` already enters the Pod's network namespace."""
    try:
        done = subprocess.run(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0
