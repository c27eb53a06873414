"""Start, recognise and stop the background processes of a local cluster.

Each component runs in its own session (process group), detached from the terminal, so that
`make cluster-up` can return while the cluster keeps running, and so that stopping a component
also ends anything it started.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcessRecord:
    """What we need to find a process again later: its pid and the executable it was started as."""

    name: str
    pid: int
    executable: str


def spawn(
    name: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
) -> tuple[ProcessRecord, subprocess.Popen[bytes]]:
    """Start `args` in a new session with stdout and stderr appended to `log`."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(
            list(args),
            stdin=subprocess.DEVNULL,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env=dict(env) if env is not None else None,
        )
    return ProcessRecord(name=name, pid=proc.pid, executable=str(args[0])), proc


def pid_alive(pid: int) -> bool:
    """True when the pid exists and is not a zombie waiting to be reaped."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def is_running(record: ProcessRecord) -> bool:
    """True when the pid is alive and still runs the executable it was started as (pids get reused)."""
    try:
        cmdline = Path(f"/proc/{record.pid}/cmdline").read_bytes().split(b"\0")[0].decode()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    return cmdline == record.executable and pid_alive(record.pid)


def stop(record: ProcessRecord, grace: float = 10.0) -> None:
    """SIGTERM the process group, wait up to `grace` seconds, then SIGKILL what is left."""
    if not is_running(record):
        _signal_group(record.pid, signal.SIGKILL)  # stragglers of a dead leader, if any
        return
    _signal_group(record.pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        _reap(record.pid)
        if not is_running(record) and not _group_alive(record.pid):
            return
        time.sleep(0.05)
    _signal_group(record.pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and (is_running(record) or _group_alive(record.pid)):
        _reap(record.pid)
        time.sleep(0.05)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    # Zombies still count for killpg; look for a live member.
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False


def terminate(process: subprocess.Popen[bytes], grace: float = 20.0) -> None:
    """End a child started with Popen: SIGTERM, wait up to `grace` seconds, then SIGKILL."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def stop_group(process: subprocess.Popen[bytes], grace: float = 20) -> None:
    """End a child started with Popen(start_new_session=True) and everything it started: SIGTERM its
    process group, then SIGKILL the group if the child outlives `grace` (children included)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)  # stragglers (pool children) of a leader already gone
    process.wait(5)


def _reap(pid: int) -> None:
    """Collect our own child's exit status so it does not linger as a zombie."""
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now; host="" asks for one free on every
    interface (for a server that listens on 0.0.0.0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    """True when something already listens on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def log_tail(log: Path, lines: int = 3) -> str:
    """The last few non-empty lines of a log, for an error message."""
    try:
        text = log.read_text(errors="replace")
    except FileNotFoundError:
        return "(no log)"
    kept = [line.strip() for line in text.splitlines() if line.strip()]
    return " | ".join(kept[-lines:]) or "(empty log)"
