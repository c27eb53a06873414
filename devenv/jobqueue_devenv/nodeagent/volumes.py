"""A Pod's volumes on the host, prepared the way the kubelet's volume manager prepares them.

Every volume becomes one host path, which `mounter.py` bind-mounts at each of its `mountPath`s inside
the container's private mount namespace (nothing is ever mounted on the host itself):

- `emptyDir`: a folder `<pod folder>/volumes/<name>` (any `medium` is a plain folder), removed with the Pod;
- `configMap`, `secret`, `downwardAPI`, `projected`: files written from the objects into
  `<pod folder>/volumes/<name>` like the kubelet's atomic writer (`..data` symlink to a timestamped
  folder, one symlink per top-level key), with `items`, `defaultMode`/`mode` and `optional`; they are
  rewritten when their sources change (every `REFRESH_SECONDS`), and mounted read-only;
- `projected` `serviceAccountToken`: a token from the TokenRequest API for the Pod's ServiceAccount,
  bound to the Pod, renewed when 80% of its lifetime has passed (as the kubelet does);
- `persistentVolumeClaim` (and generic `ephemeral`): the bound PersistentVolume's `hostPath` or
  `local` path; a claim that is not bound yet keeps the containers waiting;
- `hostPath`: the path itself, with the `type` checks (`DirectoryOrCreate`/`FileOrCreate` create it).

The file rendering is pure (`keyed_files`, `downward_files`, `projected_files`); `PodVolumes` does the I/O.
"""

from __future__ import annotations

import datetime
import logging
import os
import secrets as random_names
import shutil
import stat
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Protocol

from jobqueue_devenv.nodeagent import envvars

log = logging.getLogger("node-agent.volumes")

REFRESH_SECONDS = 10.0
DEFAULT_MODE = 0o644
TOKEN_SECONDS = 3600
TOKEN_MAX_AGE = 24 * 3600
DATA_LINK = "..data"
MOUNTER = Path(__file__).with_name("mounter.py")
REPOSITORY = Path(__file__).resolve().parents[3]

Files = dict[str, tuple[bytes, int]]
"""Relative path -> (content, mode) of a volume made of files."""

FILE_VOLUMES = ("configMap", "secret", "downwardAPI", "projected")
"""Volumes the agent writes; the kubelet mounts them read-only."""


class VolumeError(Exception):
    """A volume cannot be set up (yet): the Pod's containers wait, as with the kubelet's FailedMount."""


class Sources(Protocol):
    """What volumes are made from, read from the API server (the agent implements it)."""

    def secret(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...
    def config_map(self, namespace: str, name: str) -> Mapping[str, bytes] | None: ...
    def claim(self, namespace: str, name: str) -> Mapping[str, Any] | None: ...
    def persistent_volume(self, name: str) -> Mapping[str, Any] | None: ...
    def token(self, namespace: str, service_account: str, audience: str, seconds: int, pod: str, uid: str) -> str: ...


TokenSource = Callable[[str, int], str]
"""(audience, expirationSeconds) -> a token for the Pod's ServiceAccount, bound to the Pod."""


# -- pure rendering ---------------------------------------------------------------------------------


def _check_path(path: str) -> str:
    parts = PurePosixPath(path).parts
    if not path or path.startswith("/") or ".." in parts:
        raise VolumeError(f"invalid path {path!r} in a volume: must be relative and must not contain '..'")
    return path


def keyed_files(
    kind: str, name: str, data: Mapping[str, bytes] | None, source: Mapping[str, Any], default_mode: int
) -> Files:
    """The files of a configMap or secret volume (or projection): every key, or just `items`."""
    optional = bool(source.get("optional"))
    if data is None:
        if optional:
            return {}
        raise VolumeError(f'{kind} "{name}" not found')
    items = source.get("items")
    if not items:
        return {_check_path(key): (value, default_mode) for key, value in data.items()}
    files: Files = {}
    for item in items:
        key = item["key"]
        if key not in data:
            if optional:
                continue
            raise VolumeError(f"{kind} {name} has no key {key!r}")
        files[_check_path(item["path"])] = (data[key], _mode(item.get("mode"), default_mode))
    return files


def _mode(value: Any, default: int) -> int:
    return int(value) & 0o777 if value is not None else default


def format_map(values: Mapping[str, str]) -> bytes:
    """Labels or annotations as the downward API writes them: `key="value"` lines, sorted."""
    import json

    return "".join(f"{key}={json.dumps(values[key])}\n" for key in sorted(values)).encode()


def downward_files(pod: Mapping[str, Any], items: Sequence[Mapping[str, Any]], default_mode: int) -> Files:
    """The files of a downwardAPI volume (or projection)."""
    metadata = pod.get("metadata") or {}
    files: Files = {}
    for item in items:
        path, mode = _check_path(item["path"]), _mode(item.get("mode"), default_mode)
        if "fieldRef" in item:
            field = item["fieldRef"]["fieldPath"]
            if field in ("metadata.labels", "metadata.annotations"):
                value = format_map(metadata.get(field.split(".")[1]) or {})
            else:
                try:
                    value = envvars.field_value(pod, field).encode()
                except envvars.ConfigError as exc:
                    raise VolumeError(str(exc)) from None
        else:
            raise VolumeError(f"downwardAPI item {path}: only fieldRef is supported by the local node agent")
        files[path] = (value, mode)
    return files


def projected_files(
    pod: Mapping[str, Any],
    projected: Mapping[str, Any],
    secrets: Callable[[str], Mapping[str, bytes] | None],
    config_maps: Callable[[str], Mapping[str, bytes] | None],
    token: TokenSource,
) -> Files:
    default_mode = _mode(projected.get("defaultMode"), DEFAULT_MODE)
    files: Files = {}
    for source in projected.get("sources") or []:
        if "secret" in source:
            ref = source["secret"]
            files.update(keyed_files("secret", ref["name"], secrets(ref["name"]), ref, default_mode))
        elif "configMap" in source:
            ref = source["configMap"]
            files.update(keyed_files("configmap", ref["name"], config_maps(ref["name"]), ref, default_mode))
        elif "downwardAPI" in source:
            files.update(downward_files(pod, source["downwardAPI"].get("items") or [], default_mode))
        elif "serviceAccountToken" in source:
            ref = source["serviceAccountToken"]
            seconds = int(ref.get("expirationSeconds") or TOKEN_SECONDS)
            value = token(ref.get("audience") or "", seconds).encode()
            files[_check_path(ref["path"])] = (value, _mode(ref.get("mode"), default_mode))
        else:
            raise VolumeError(f"projected source {sorted(source)} is not supported by the local node agent")
    return files


def volume_kind(volume: Mapping[str, Any]) -> str:
    kinds = [key for key in volume if key != "name"]
    return kinds[0] if kinds else "emptyDir"


# -- writing files atomically -----------------------------------------------------------------------


def _current(folder: Path) -> Files | None:
    data = folder / DATA_LINK
    if not data.is_dir():
        return None
    files: Files = {}
    for path in data.rglob("*"):
        if path.is_file():
            files[str(path.relative_to(data))] = (path.read_bytes(), stat.S_IMODE(path.stat().st_mode))
    return files


def write_files(folder: Path, files: Files) -> bool:
    """Make `folder` hold exactly `files`, switched atomically as the kubelet does. Returns True if it changed."""
    folder.mkdir(parents=True, exist_ok=True)
    if _current(folder) == files:
        return False
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y_%m_%d_%H_%M_%S")
    fresh = folder / f"..{stamp}.{random_names.token_hex(4)}"
    fresh.mkdir(mode=0o755)
    for relative, (content, mode) in files.items():
        path = fresh / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(mode)
    old = os.readlink(folder / DATA_LINK) if (folder / DATA_LINK).is_symlink() else None
    temporary = folder / "..data_tmp"
    temporary.unlink(missing_ok=True)
    temporary.symlink_to(fresh.name)
    temporary.rename(folder / DATA_LINK)  # atomic: readers see the old files or the new ones
    tops = {PurePosixPath(relative).parts[0] for relative in files}
    for top in tops:
        link = folder / top
        if not link.is_symlink():
            link.symlink_to(f"{DATA_LINK}/{top}")
    for entry in folder.iterdir():
        if entry.is_symlink() and not entry.name.startswith("..") and entry.name not in tops:
            entry.unlink()
    if old and old != fresh.name:
        shutil.rmtree(folder / old, ignore_errors=True)
    return True


# -- fsGroup ---------------------------------------------------------------------------------------

FS_GROUP_VOLUMES = frozenset({"emptyDir", "persistentVolumeClaim", "ephemeral"})
"""The volumes whose ownership the Pod's `fsGroup` changes here (the kubelet also changes written ones')."""


def fs_group_mode(mode: int, is_dir: bool, read_only: bool) -> int:
    """The kubelet's SetVolumeOwnership: the group may read (and write, unless read-only) everything and
    search folders, and folders are setgid, so what a container makes there belongs to the fsGroup too."""
    mask = 0o440 if read_only else 0o660
    return mode | mask | (0o110 | stat.S_ISGID if is_dir else 0)


def set_volume_ownership(root: Path, gid: int, read_only: bool) -> None:
    """Give a volume's folder and everything in it to group `gid` (fsGroupChangePolicy `Always`: recursive,
    each time a Pod starts with it). Symbolic links are left alone."""
    for path in [root, *root.rglob("*")]:
        if path.is_symlink():
            continue
        os.chown(path, -1, gid)
        info = path.stat()
        path.chmod(fs_group_mode(stat.S_IMODE(info.st_mode), stat.S_ISDIR(info.st_mode), read_only))


# -- one Pod's volumes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Volume:
    path: str
    """Host path bind-mounted at each mountPath."""
    read_only: bool
    kind: str


class PodVolumes:
    """Prepares a Pod's volumes on the host, refreshes the written ones, and plans each container's mounts."""

    def __init__(
        self, pod: Mapping[str, Any], folder: Path, sources: Sources, clock: Callable[[], float] = time.time
    ) -> None:
        self.pod = pod
        self.folder = folder
        self.sources = sources
        self.clock = clock
        self.ready: dict[str, Volume] = {}
        self.tokens: dict[tuple[str, int], tuple[str, float]] = {}
        """(audience, seconds) -> (token, when to renew it)."""
        self.last_refresh = 0.0

    @property
    def namespace(self) -> str:
        return str(self.pod["metadata"]["namespace"])

    @property
    def specs(self) -> list[Mapping[str, Any]]:
        return list(self.pod["spec"].get("volumes") or [])

    def prepare(self) -> None:
        """Set up every volume not set up yet; raises VolumeError for the first that cannot be (yet)."""
        fs_group = (self.pod["spec"].get("securityContext") or {}).get("fsGroup")
        for volume in self.specs:
            if volume["name"] not in self.ready:
                prepared = self._prepare(volume)
                if fs_group is not None and prepared.kind in FS_GROUP_VOLUMES:
                    set_volume_ownership(Path(prepared.path), int(fs_group), prepared.read_only)
                self.ready[volume["name"]] = prepared
        self.last_refresh = self.clock()

    def refresh(self) -> None:
        """Rewrite the written volumes whose sources changed, and renew tokens that are due."""
        now = self.clock()
        due = now - self.last_refresh >= REFRESH_SECONDS or any(renew <= now for _, renew in self.tokens.values())
        if not due:
            return
        self.last_refresh = now
        for volume in self.specs:
            if volume["name"] in self.ready and volume_kind(volume) in FILE_VOLUMES:
                try:
                    self._prepare(volume)
                except Exception as exc:  # a deleted ConfigMap: keep the last files, as the kubelet does
                    log.warning("%s: volume %s not refreshed: %s", self._pod_name, volume["name"], exc)

    @property
    def _pod_name(self) -> str:
        return f"{self.namespace}/{self.pod['metadata']['name']}"

    def _folder_of(self, name: str) -> Path:
        return self.folder / "volumes" / name

    def _prepare(self, volume: Mapping[str, Any]) -> Volume:
        name, kind = volume["name"], volume_kind(volume)
        source = volume.get(kind) or {}
        if kind == "emptyDir":
            folder = self._folder_of(name)
            folder.mkdir(parents=True, exist_ok=True)
            folder.chmod(0o777)
            return Volume(str(folder), False, kind)
        if kind in FILE_VOLUMES:
            folder = self._folder_of(name)
            if write_files(folder, self._files(kind, source)):
                log.info("%s: wrote volume %s", self._pod_name, name)
            return Volume(str(folder), True, kind)
        if kind == "hostPath":
            return Volume(host_path(source["path"], source.get("type") or ""), False, kind)
        if kind == "persistentVolumeClaim":
            return Volume(self._claim_path(source["claimName"]), bool(source.get("readOnly")), kind)
        if kind == "ephemeral":
            return Volume(self._claim_path(f"{self.pod['metadata']['name']}-{name}"), False, kind)
        raise VolumeError(f"volume {name}: {kind} volumes are not supported by the local node agent")

    def _files(self, kind: str, source: Mapping[str, Any]) -> Files:
        default_mode = _mode(source.get("defaultMode"), DEFAULT_MODE)
        if kind == "configMap":
            name = source["name"]
            return keyed_files("configmap", name, self.sources.config_map(self.namespace, name), source, default_mode)
        if kind == "secret":
            name = source["secretName"]
            return keyed_files("secret", name, self.sources.secret(self.namespace, name), source, default_mode)
        if kind == "downwardAPI":
            return downward_files(self.pod, source.get("items") or [], default_mode)
        return projected_files(
            self.pod,
            source,
            lambda n: self.sources.secret(self.namespace, n),
            lambda n: self.sources.config_map(self.namespace, n),
            self._token,
        )

    def _token(self, audience: str, seconds: int) -> str:
        now = self.clock()
        cached = self.tokens.get((audience, seconds))
        if cached is not None and cached[1] > now:
            return cached[0]
        meta = self.pod["metadata"]
        account = self.pod["spec"].get("serviceAccountName") or "default"
        token = self.sources.token(self.namespace, account, audience, seconds, meta["name"], meta["uid"])
        self.tokens[(audience, seconds)] = (token, now + min(0.8 * seconds, TOKEN_MAX_AGE))
        return token

    def _claim_path(self, claim_name: str) -> str:
        claim = self.sources.claim(self.namespace, claim_name)
        if claim is None:
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" not found')
        volume_name = (claim.get("spec") or {}).get("volumeName")
        if not volume_name or (claim.get("status") or {}).get("phase") != "Bound":
            raise VolumeError(f'persistentvolumeclaim "{claim_name}" is not bound yet')
        volume = self.sources.persistent_volume(volume_name)
        if volume is None:
            raise VolumeError(f'persistentvolume "{volume_name}" not found')
        spec = volume.get("spec") or {}
        if "hostPath" in spec:
            return host_path(spec["hostPath"]["path"], spec["hostPath"].get("type") or "")
        if "local" in spec:
            return host_path(spec["local"]["path"], "Directory")
        raise VolumeError(f"persistentvolume {volume_name}: only hostPath and local volumes can be mounted here")

    def remove(self) -> None:
        """Delete what the agent made for the Pod (emptyDirs, written files); hostPaths and PVs stay."""
        shutil.rmtree(self.folder / "volumes", ignore_errors=True)
        shutil.rmtree(self.folder / "mounts", ignore_errors=True)

    # -- mounts of one container -------------------------------------------------------------------

    def mounts(self, container: Mapping[str, Any], env: Mapping[str, str]) -> list[dict[str, Any]]:
        """The container's volumeMounts as (host source, mountPath, readOnly), subPaths resolved."""
        mounts = []
        for mount in container.get("volumeMounts") or []:
            volume = self.ready.get(mount["name"])
            if volume is None:
                raise VolumeError(f"volumeMount {mount['name']!r} names no volume of the Pod")
            source = volume.path
            sub_path = mount.get("subPath") or envvars.expand(mount.get("subPathExpr") or "", env)
            if sub_path:
                source = str(Path(volume.path) / _check_path(sub_path))
                if not os.path.lexists(source):
                    if volume.read_only:
                        raise VolumeError(f"subPath {sub_path!r} does not exist in volume {mount['name']!r}")
                    os.makedirs(source, 0o755, exist_ok=True)
            read_only = volume.read_only or bool(mount.get("readOnly"))
            mounts.append({"source": source, "target": mount["mountPath"], "readOnly": read_only})
        return mounts

    def container_plan(self, container: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
        """What `mounter.py` does for `container`: its mounts, working dir, staging folder and kept folders."""
        mounts = self.mounts(container, env)
        name = container["name"]
        staging = self.folder / "mounts" / f"{name}.root"
        staging.mkdir(parents=True, exist_ok=True)
        return {
            "mounts": mounts,
            "workingDir": container.get("workingDir") or "",
            "cwd": str(self.folder),
            "staging": str(staging),
            "keep": kept_folders(),
        }

    def write_plan(self, container: Mapping[str, Any], env: Mapping[str, str]) -> Path:
        import json

        path = self.folder / "mounts" / f"{container['name']}.json"
        plan = self.container_plan(container, env)
        path.write_text(json.dumps(plan, indent=1))
        return path


def needs_mounter(container: Mapping[str, Any]) -> bool:
    """Containers without volumes and with an existing working dir (or none) start without the mounter."""
    if container.get("volumeMounts"):
        return True
    working_dir = str(container.get("workingDir") or "")
    return bool(working_dir) and not os.path.isdir(working_dir)


def mounter_command(plan: Path, argv: Sequence[str]) -> list[str]:
    return [sys.executable, "-I", str(MOUNTER), str(plan), "--", *argv]


def kept_folders() -> list[str]:
    """Host folders Pod processes use (this Python, the repository): kept visible under volumes."""
    found: list[str] = []
    for path in sorted({os.path.realpath(p) for p in (sys.prefix, sys.base_prefix, str(REPOSITORY))}):
        if not any(path == f or path.startswith(f + "/") for f in found):
            found.append(path)
    return found


_HOST_PATH_CHECKS: dict[str, Callable[[int], bool]] = {
    "Directory": stat.S_ISDIR,
    "File": stat.S_ISREG,
    "Socket": stat.S_ISSOCK,
    "CharDevice": stat.S_ISCHR,
    "BlockDevice": stat.S_ISBLK,
}


def host_path(path: str, kind: str) -> str:
    """Check (or create) a hostPath as its `type` says; returns the path."""
    if kind == "DirectoryOrCreate":
        os.makedirs(path, 0o755, exist_ok=True)
        kind = "Directory"
    elif kind == "FileOrCreate":
        os.makedirs(os.path.dirname(path) or "/", 0o755, exist_ok=True)
        if not os.path.exists(path):
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o644))
        kind = "File"
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise VolumeError(f"hostPath {path} does not exist") from None
    check = _HOST_PATH_CHECKS.get(kind)
    if kind and check is None:
        raise VolumeError(f"hostPath type {kind!r} is not known")
    if check is not None and not check(mode):
        raise VolumeError(f"hostPath {path} is not a {kind}")
    return path
