"""One run of one container: a host process inside the Pod's network namespace, in its own session.

The process is started through `ip netns exec NETNS`, which enters the Pod's network namespace and
bind-mounts the Pod's /etc/netns/NETNS/hosts over /etc/hosts, then execs the command (same pid).
Its session and process group are the container: signals for "the whole container" go to the group.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobqueue_devenv.nodeagent import network

MARKER = "JQ_NODE_AGENT_DIR"
"""Set in every Pod process's environment to the agent's folder, so `down` can find them all."""


def find_executable(command: str, path: str) -> str | None:
    """Where `command` would be found with PATH=`path`, or None."""
    if "/" in command:
        return command if os.path.isfile(command) and os.access(command, os.X_OK) else None
    return shutil.which(command, path=path)


def in_netns(netns: str, argv: Sequence[str]) -> list[str]:
    return [network.ip_binary(), "netns", "exec", netns, *argv]


def spawn(argv: Sequence[str], env: Mapping[str, str], cwd: str | Path, log: Path) -> subprocess.Popen[bytes]:
    """Start a container's process (host process or `runc run`): own session, output appended to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as sink:
        return subprocess.Popen(
            list(argv),
            env=dict(env),
            cwd=cwd,
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


class ContainerProcess:
    """A started container process; poll, signal and wait for it."""

    def __init__(self, argv: Sequence[str], env: Mapping[str, str], cwd: str, log: Path, netns: str) -> None:
        self.popen = spawn(in_netns(netns, argv), env, cwd, log)
        self.pid = self.popen.pid
        self.started = time.monotonic()

    def poll(self) -> int | None:
        return self.popen.poll()

    def signal_main(self, sig: signal.Signals) -> None:
        """Signal the main process only (the kubelet's SIGTERM goes to PID 1 of the container)."""
        with contextlib.suppress(ProcessLookupError):
            self.popen.send_signal(sig)

    def kill_group(self) -> None:
        """SIGKILL everything left in the container's process group."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        try:
            return self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None

    def stop(self, grace: float) -> int:
        """SIGTERM to the main process, up to `grace` seconds to exit, then SIGKILL the group."""
        self.signal_main(signal.SIGTERM)
        code = self.wait(grace)
        self.kill_group()
        if code is None:
            code = self.popen.wait()
        return code
