"""Set up one container's volume mounts, then exec its command: the last step before a Pod process runs.

Run as `PYTHON -I mounter.py PLAN.json -- COMMAND [ARGS...]` *inside* `ip netns exec NETNS`, which has
already put the process in a private mount namespace whose mounts are slaves of the host's (so
nothing done here propagates back to the host), with the Pod's hosts file over /etc/hosts. This file
uses the standard library only (it runs with `-I`, without the agent's imports) and makes mount(2)
calls through ctypes. The plan (JSON, written by the agent, see `volumes.container_plan`):

    {"mounts": [{"source": HOST_PATH, "target": MOUNT_PATH, "readOnly": BOOL}, ...],
     "workingDir": PATH or "", "staging": EMPTY_HOST_FOLDER, "keep": [HOST_PATH, ...]}

Mounts are applied parents first (sorted by depth, as containerd does). A mountPath that exists on
the host is simply covered by a bind mount. One that does not exist cannot be created on the host, so
its nearest existing ancestor A is *shadowed*: a tmpfs is mounted over A (inside this namespace only)
and every entry of the original A is put back into it (directories and files bind-mounted from the
original, symlinks recreated), after which the missing folders can be made in the tmpfs. When the
nearest ancestor is `/` itself (a mountPath such as `/data` on a host without /data), the same is
done for the whole root in the `staging` folder and the command runs `chroot`ed there: a mirror of
the host's root plus the new folders. Every source is opened before the first mount, so a volume
mounted over, say, /tmp does not hide the sources that live under /tmp.

`keep` lists host folders the Pod's processes need (the virtualenv, the repository): a volume mounted
over one of their ancestors (an emptyDir at /tmp while the checkout lives under /tmp) gets them bound
back at the same path, so the container's executables stay where PATH says they are.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import stat
import sys
from typing import Any

MS_RDONLY = 0x1
MS_REMOUNT = 0x20
MS_BIND = 0x1000
MS_REC = 0x4000
MS_UNBINDABLE = 0x20000

MAX_SYMLINKS = 40
EXIT_MOUNT_FAILED = 126

_libc: Any = None


def mount(source: str | None, target: str, fstype: str | None, flags: int, data: str | None = None) -> None:
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(None, use_errno=True)
    encoded = [None if value is None else value.encode() for value in (source, target, fstype, data)]
    if _libc.mount(encoded[0], encoded[1], encoded[2], ctypes.c_ulong(flags), encoded[3]) != 0:
        code = ctypes.get_errno()
        raise OSError(code, f"mount {source or fstype or ''} on {target}: {os.strerror(code)}")


def depth(path: str) -> int:
    return len([part for part in path.split("/") if part and part != "."])


def under(path: str, folder: str) -> bool:
    """True when `path` is `folder` or inside it (both absolute and normalised)."""
    return folder == "/" or path == folder or path.startswith(folder.rstrip("/") + "/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if parts else base


def resolve(root: str, path: str) -> tuple[str, list[str]]:
    """Follow absolute `path` inside `root` (symlinks resolve against `root`) as far as it exists.

    Returns the deepest existing path, as seen inside `root` (starting with "/"), and the components
    that are missing below it. A component that exists but is not a folder ends the walk too.
    """
    parts = [part for part in path.split("/") if part]
    done: list[str] = []
    hops = 0
    while parts:
        part = parts.pop(0)
        if part == ".":
            continue
        if part == "..":
            if done:
                done.pop()
            continue
        inside = "/" + "/".join([*done, part])
        try:
            info = os.lstat(host_path(root, inside))
        except FileNotFoundError:
            return "/" + "/".join(done), [part, *parts]
        if stat.S_ISLNK(info.st_mode):
            hops += 1
            if hops > MAX_SYMLINKS:
                raise OSError(errno.ELOOP, f"too many symbolic links in {path}")
            link = os.readlink(host_path(root, inside))
            if link.startswith("/"):
                done = []
            parts = [p for p in link.split("/") if p] + parts
            continue
        done.append(part)
        if parts and not stat.S_ISDIR(info.st_mode):
            raise OSError(errno.ENOTDIR, f"{inside} is not a directory (in mountPath {path})")
    return "/" + "/".join(done), []


def host_path(root: str, inside: str) -> str:
    """Where a path seen inside `root` is in the current (unchrooted) view."""
    return inside if root == "/" else join(root, inside.lstrip("/")) if inside != "/" else root


class Mounter:
    def __init__(self, plan: dict[str, Any]) -> None:
        self.plan = plan
        self.root = "/"
        self.ours: set[str] = set()
        """Folders (inside root) on a tmpfs of ours, where missing folders may be created."""

    # -- shadowing ---------------------------------------------------------------------------------

    def _mirror(self, source_dir: str, target_dir: str) -> None:
        """Recreate every entry of `source_dir` (a path or /proc/self/fd/N) in the empty `target_dir`."""
        for name in sorted(os.listdir(source_dir)):
            source, target = join(source_dir, name), join(target_dir, name)
            info = os.lstat(source)
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
                continue
            if stat.S_ISDIR(info.st_mode):
                os.mkdir(target, 0o755)
            else:
                os.close(os.open(target, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600))
            try:
                mount(source, target, None, MS_BIND | MS_REC)
            except OSError as exc:
                print(f"node agent: skipped {join(target_dir, name)} in the Pod's view: {exc}", file=sys.stderr)

    @staticmethod
    def _tmpfs(target: str, like: os.stat_result) -> None:
        mode = f"mode={stat.S_IMODE(like.st_mode):o},uid={like.st_uid},gid={like.st_gid}"
        mount("tmpfs", target, "tmpfs", 0, mode)

    def shadow_root(self) -> None:
        """Mirror `/` into the staging folder (a tmpfs there) and work inside it; chroot at the end."""
        staging = self.plan["staging"]
        self._tmpfs(staging, os.stat("/"))
        # Unbindable: recursive binds of / entries that contain the staging folder leave it out.
        mount(None, staging, None, MS_UNBINDABLE)
        self._mirror("/", staging)
        self.root = staging
        self.ours.add("/")

    def shadow(self, folder: str) -> None:
        """Cover `folder` (inside root) with a tmpfs that shows the same entries as before."""
        where = host_path(self.root, folder)
        handle = os.open(where, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            self._tmpfs(where, os.fstat(handle))
            self._mirror(f"/proc/self/fd/{handle}", where)
        finally:
            os.close(handle)
        self.ours.add(folder)

    def ensure(self, path: str, is_file: bool) -> str:
        """Make `path` exist inside root without touching the host's folders; returns its resolved form."""
        existing, missing = resolve(self.root, path)
        if not missing:
            return existing
        if existing not in self.ours:
            if existing == "/" and self.root == "/":
                raise OSError(errno.EPERM, f"{path}: would need a new top-level folder (no staging root)")
            self.shadow(existing)
        current = existing
        for index, part in enumerate(missing):
            current = join(current, part) if current != "/" else "/" + part
            where = host_path(self.root, current)
            if index == len(missing) - 1 and is_file:
                os.close(os.open(where, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644))
            else:
                os.mkdir(where, 0o755)
                self.ours.add(current)
        return current

    def needs_new_root(self, paths: list[str]) -> bool:
        """Does any path lack even its top-level folder on the host?"""
        for path in paths:
            existing, missing = resolve("/", path)
            if missing and existing == "/":
                return True
        return False

    # -- the plan ----------------------------------------------------------------------------------

    def run(self) -> None:
        mounts = sorted(self.plan.get("mounts") or [], key=lambda m: depth(m["target"]))
        working_dir = self.plan.get("workingDir") or ""
        # Open every source and kept folder first: a later mount may cover the path it was reached by.
        sources = [os.open(m["source"], os.O_PATH | os.O_CLOEXEC) for m in mounts]
        keep = []
        for path in self.plan.get("keep") or []:
            try:
                keep.append((os.path.realpath(path), os.open(path, os.O_PATH | os.O_CLOEXEC)))
            except OSError:
                continue
        cwd = os.open(".", os.O_PATH | os.O_CLOEXEC)
        wanted = [m["target"] for m in mounts] + ([working_dir] if working_dir else [])
        if self.needs_new_root(wanted):
            self.shadow_root()
        for spec, source in zip(mounts, sources, strict=True):
            is_file = not stat.S_ISDIR(os.fstat(source).st_mode)
            target = self.ensure(spec["target"], is_file)
            where = host_path(self.root, target)
            mount(f"/proc/self/fd/{source}", where, None, MS_BIND | MS_REC)
            if spec.get("readOnly"):
                mount(None, where, None, MS_BIND | MS_REMOUNT | MS_RDONLY)
            self.ours = {p for p in self.ours if not under(p, target)}
            for kept, handle in keep:
                if kept != target and under(kept, target) and not spec.get("readOnly"):
                    self._keep(kept, handle)
        if working_dir:
            working_dir = self.ensure(working_dir, is_file=False)
        if self.root != "/":
            os.chroot(self.root)
        try:
            os.chdir(working_dir or self.plan.get("cwd") or "/")
        except OSError:
            os.fchdir(cwd)  # the agent's default folder for the Pod, covered by a volume: still usable

    def _keep(self, kept: str, handle: int) -> None:
        where = host_path(self.root, kept)
        try:
            os.makedirs(where, 0o755, exist_ok=True)
            mount(f"/proc/self/fd/{handle}", where, None, MS_BIND | MS_REC)
        except OSError as exc:
            print(f"node agent: could not keep {kept} visible under a volume: {exc}", file=sys.stderr)


def main(argv: list[str]) -> None:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: mounter.py PLAN.json -- COMMAND [ARGS...]", file=sys.stderr)
        sys.exit(2)
    with open(argv[0]) as handle:
        plan = json.load(handle)
    try:
        Mounter(plan).run()
    except OSError as exc:
        print(f"node agent: cannot set up the container's volumes: {exc}", file=sys.stderr)
        sys.exit(EXIT_MOUNT_FAILED)
    command = argv[2:]
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        print(f"node agent: cannot run {command[0]}: {exc}", file=sys.stderr)
        sys.exit(127)


if __name__ == "__main__":
    main(sys.argv[1:])
