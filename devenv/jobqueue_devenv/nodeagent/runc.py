"""One run of one container from an image, with runc: the node agent's container runtime.

The container's root filesystem is an overlay of the image's layers (read from containers-storage,
never copied) under a writable folder of this run. The overlay is mounted in a private mount
namespace of `unshare`, which then execs `runc run` in the foreground: nothing is mounted on the host,
and the mount vanishes with the run. runc stays the container's parent: it forwards signals, and its
exit status is the container's (128 + N when a signal N ended it). `--keep` leaves the cgroup for a
moment after the exit, so an OOM kill can be read from it before `runc delete`.

Why runc and not podman: runc is what podman runs anyway, and a direct `runc run` starts a container
in well under a second, without a second daemon-like state database shared by every cluster on the
machine. Why not crun: it refuses this machine's hybrid cgroup layout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import shutil
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import containers

log = logging.getLogger("node-agent.runc")

RUNC = "runc"
SIGNAL_RETRY_SECONDS = 0.05
KILL_PATIENCE_SECONDS = 5.0
"""How long a signal without a grace period of its own (a SIGKILL) is tried on a container runc does not know
yet; a SIGTERM is tried for its grace period."""
CGROUP_ROOT = Path("/sys/fs/cgroup")
_MOUNT_AND_RUN = (
    'mount -t overlay overlay -o "lowerdir=$1,upperdir=$2,workdir=$3" "$4" '
    '&& exec "$5" --root "$6" run --keep --bundle "$7" "$8"'
)


def state_root(agent_folder: Path) -> Path:
    """runc's state folder of one agent: its containers are listed, killed and deleted from here."""
    return agent_folder / "runc"


def runc_binary() -> str:
    """runc's full path (probes run with the container's PATH, which need not have /usr/sbin)."""
    return shutil.which(RUNC) or shutil.which(RUNC, path="/usr/sbin:/usr/bin:/sbin:/bin") or RUNC


def _runc(root: Path, *args: str, timeout: float = 10) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [runc_binary(), "--root", str(root), *args], capture_output=True, text=True, check=False, timeout=timeout
    )


class RuncContainer:
    """A started container; the same interface as `containers.ContainerProcess` (poll, stop...)."""

    def __init__(
        self,
        container_id: str,
        bundle: Path,
        config: Mapping[str, Any],
        layers: Sequence[str],
        log_path: Path,
        root: Path,
        env: Mapping[str, str],
    ) -> None:
        self.id = container_id
        self.bundle = bundle
        self.root = root
        self.cgroups_path = str(config["linux"]["cgroupsPath"])
        self.oom_killed = False
        self.closed = False
        shutil.rmtree(bundle, ignore_errors=True)
        for name in ("rootfs", "upper", "work"):
            (bundle / name).mkdir(parents=True)
        (bundle / "config.json").write_text(json.dumps(config, indent=1))
        root.mkdir(parents=True, exist_ok=True)
        _runc(root, "delete", "--force", container_id)  # a run of the same id left by a dead agent
        command = [
            "unshare", "--mount", "--propagation", "private", "sh", "-c", _MOUNT_AND_RUN, "sh",
            ":".join(layers), str(bundle / "upper"), str(bundle / "work"), str(bundle / "rootfs"),
            runc_binary(), str(root), str(bundle), container_id,
        ]  # fmt: skip
        self.popen = containers.spawn(command, env, bundle, log_path)
        self.pid = self.popen.pid
        self.started = time.monotonic()

    # -- the ContainerProcess interface ------------------------------------------------------------

    def poll(self) -> int | None:
        code = self.popen.poll()
        if code is not None:
            self.close()
        return code

    def signal_main(self, sig: signal.Signals, patience: float = KILL_PATIENCE_SECONDS) -> bool:
        """Signal PID 1 of the container, as the kubelet's runtime does. Returns whether it was delivered.

        The run is spawned before runc has created the container (the overlay is mounted first), and `runc
        kill` refuses a container it does not know yet: a Pod deleted while it started got no SIGTERM at all
        and ran until its grace period ended. A kubelet's runtime has created the container before it says it
        started, so the signal is tried again until runc knows it and runs it (`_started`), the run ended, or
        `patience` seconds passed.
        """
        deadline = time.monotonic() + patience
        while True:
            if (sig == signal.SIGKILL or self._started()) and _runc(
                self.root, "kill", self.id, str(int(sig))
            ).returncode == 0:
                return True
            if self.popen.poll() is not None or time.monotonic() >= deadline:
                return False
            time.sleep(SIGNAL_RETRY_SECONDS)

    def _started(self) -> bool:
        """Whether runc reports the container running. Before that ("created"), PID 1 is runc's own init, which
        has no SIGTERM handler, so the kernel drops the signal (a PID namespace's init) and the image's process
        never gets it; once it runs, the image's init blocks signals from its first instruction and keeps one."""
        result = _runc(self.root, "state", self.id)
        if result.returncode != 0:
            return False
        try:
            return bool(json.loads(result.stdout).get("status") == "running")
        except ValueError:
            return False

    def kill_group(self) -> None:
        """SIGKILL the container (PID 1 of its PID namespace: the kernel ends every other process with it)."""
        if self.popen.poll() is None:
            self.signal_main(signal.SIGKILL)

    def wait(self, timeout: float) -> int | None:
        try:
            code = self.popen.wait(timeout=max(timeout, 0))
        except subprocess.TimeoutExpired:
            return None
        self.close()
        return code

    def stop(self, grace: float) -> int:
        """SIGTERM to PID 1, up to `grace` seconds to exit, then SIGKILL."""
        deadline = time.monotonic() + grace
        self.signal_main(signal.SIGTERM, patience=grace)
        code = self.wait(deadline - time.monotonic())
        if code is None:
            self.kill_group()
            code = self.wait(10)
        if code is None:  # runc itself is stuck: end it (the container's processes die with their PID 1)
            with contextlib.suppress(ProcessLookupError):
                self.popen.kill()
            code = self.popen.wait()
            self.close()
        return code

    def exec_argv(self, argv: Sequence[str], tty: bool = False) -> list[str]:
        """`argv` run inside the container (its user, env, namespaces and mounts): probes, preStop, exec."""
        return [runc_binary(), "--root", str(self.root), "exec", *(["--tty"] if tty else []), self.id, *argv]

    # -- after the exit ----------------------------------------------------------------------------

    def _read_oom_kills(self) -> int:
        """OOM kills in the container's memory cgroup (cgroup v1 memory.oom_control, v2 memory.events)."""
        relative = self.cgroups_path.lstrip("/")
        for path in (
            CGROUP_ROOT / "memory" / relative / "memory.oom_control",
            CGROUP_ROOT / relative / "memory.events",
        ):
            try:
                for line in path.read_text().splitlines():
                    key, _, value = line.partition(" ")
                    if key == "oom_kill":
                        return int(value)
            except (OSError, ValueError):
                continue
        return 0

    def close(self) -> None:
        """After the exit: note an OOM kill, delete runc's record and cgroup, drop the writable layer."""
        if self.closed:
            return
        self.closed = True
        self.oom_killed = self._read_oom_kills() > 0
        done = _runc(self.root, "delete", "--force", self.id)
        if done.returncode != 0 and "does not exist" not in done.stderr:
            log.warning("runc delete %s: %s", self.id, done.stderr.strip())
        shutil.rmtree(self.bundle, ignore_errors=True)


def unified_root() -> Path:
    """Where the cgroup v2 hierarchy is mounted: /sys/fs/cgroup, or /sys/fs/cgroup/unified on a hybrid host."""
    for root in (CGROUP_ROOT, CGROUP_ROOT / "unified"):
        if (root / "cgroup.controllers").exists():
            return root
    raise RuntimeError("no cgroup v2 hierarchy is mounted (looked at /sys/fs/cgroup and /sys/fs/cgroup/unified)")


AGENT_CGROUP = "agent"
"""The node agent's own leaf under its node's cgroup (v2 allows no processes in a folder whose children
have controllers enabled); everything it starts inherits it, or runc moves it to a sibling."""


def join_node_cgroup(parent: str) -> None:
    """Move the calling process into its node's cgroup (v2), so that every process it and its children
    start, containers included, can be found and killed together (`kill_node_cgroup`)."""
    leaf = unified_root() / parent / AGENT_CGROUP
    leaf.mkdir(parents=True, exist_ok=True)
    (leaf / "cgroup.procs").write_text("0")


def freeze_node_cgroup(parent: str, frozen: bool = True, wait: float = 2.0) -> None:
    """Freeze (or thaw) every process of a node's cgroup (cgroup v2 `cgroup.freeze`), waiting up to `wait`
    seconds for the kernel to say it is done: a power cut stops everything in the same instant."""
    folder = unified_root() / parent
    try:
        (folder / "cgroup.freeze").write_text("1" if frozen else "0")
    except FileNotFoundError:
        return
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError):
            if f"frozen {int(frozen)}" in (folder / "cgroup.events").read_text():
                return
        time.sleep(0.01)


def kill_node_cgroup(parent: str, wait: float = 10.0) -> bool:
    """SIGKILL every process of a node's cgroup at once (cgroup v2 `cgroup.kill`), then wait up to `wait`
    seconds until none is left. Returns whether none is."""
    folder = unified_root() / parent
    with contextlib.suppress(FileNotFoundError):
        (folder / "cgroup.kill").write_text("1")
    deadline = time.monotonic() + wait
    while not node_cgroup_empty(parent):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def node_cgroup_empty(parent: str) -> bool:
    """No process left in the node's cgroup (or it has none)."""
    try:
        events = (unified_root() / parent / "cgroup.events").read_text()
    except FileNotFoundError:
        return True
    return "populated 0" in events


def remove_cgroup_parent(parent: str) -> None:
    """Remove the (by then empty) cgroup folders of one node: its agent's leaf, its containers' parent."""
    unified = unified_root()
    for folder in [
        unified / parent / AGENT_CGROUP,
        CGROUP_ROOT / parent,
        *(p / parent for p in CGROUP_ROOT.iterdir() if p.is_dir()),
    ]:
        with contextlib.suppress(OSError):
            folder.rmdir()


def delete_all(root: Path) -> list[str]:
    """Kill and delete every container of one agent (its state folder): `down`, or an agent restarting."""
    if not root.is_dir():
        return []
    done = _runc(root, "list", "--format", "json")
    ids = [entry["id"] for entry in json.loads(done.stdout or "null") or []] if done.returncode == 0 else []
    for container_id in ids:
        _runc(root, "kill", container_id, "KILL")
        _runc(root, "delete", "--force", container_id)
    return ids
