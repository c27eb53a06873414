"""A container from an image, decided the way the kubelet decides it (pure functions; the one read is the
runtime's default seccomp profile, once: `seccomp.py`).

What runs (`command`/`args` against the image's ENTRYPOINT/CMD), as whom (the image's USER,
`runAsUser`/`runAsGroup`, and the `runAsNonRoot` check with the kubelet's own messages), and the OCI
runtime configuration (`config.json`) runc gets: namespaces (the Pod's network namespace joined),
mounts (volumes as bind mounts), a read-only root when asked, capabilities, `seccompProfile`
(`RuntimeDefault`), the memory limit.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from jobqueue_devenv.nodeagent import envvars, seccomp
from jobqueue_devenv.nodeagent.imagestore import Image

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
DEFAULT_CAPABILITIES = (
    "CHOWN", "DAC_OVERRIDE", "FSETID", "FOWNER", "MKNOD", "NET_RAW", "SETGID", "SETUID", "SETFCAP", "SETPCAP",
    "NET_BIND_SERVICE", "SYS_CHROOT", "KILL", "AUDIT_WRITE",
)  # fmt: skip
"""The container runtimes' default set (containerd, CRI-O, Docker)."""


class ConfigError(Exception):
    """The container cannot be created as specified: `CreateContainerConfigError`, as with the kubelet."""


def argv(container: Mapping[str, Any], image: Image, env: Mapping[str, str]) -> list[str]:
    """Kubernetes' rule: `command` replaces ENTRYPOINT (and drops CMD), `args` replaces CMD.

    `$(VAR)` is expanded in `command` and `args` only, never in the image's own entrypoint.
    """
    command = [envvars.expand(part, env) for part in container.get("command") or []]
    args = [envvars.expand(part, env) for part in container.get("args") or []]
    if command:
        result = command + args
    else:
        result = list(image.entrypoint) + (args if container.get("args") else list(image.cmd))
    if not result:
        raise ConfigError(f"no command specified: image {image.reference} has no ENTRYPOINT or CMD")
    return result


def image_env(image: Image) -> dict[str, str]:
    env = {}
    for item in image.env:
        name, _, value = item.partition("=")
        env[name] = value
    return env


def security_context(pod: Mapping[str, Any], container: Mapping[str, Any]) -> dict[str, Any]:
    """The effective security context: the container's fields over the Pod's."""
    pod_context = pod["spec"].get("securityContext") or {}
    pod_wide = ("runAsUser", "runAsGroup", "runAsNonRoot", "seccompProfile")
    effective = {k: pod_context[k] for k in pod_wide if k in pod_context}
    effective.update(container.get("securityContext") or {})
    return effective


def pod_name(pod: Mapping[str, Any]) -> str:
    """The kubelet's format.Pod: name_namespace(uid)."""
    meta = pod["metadata"]
    return f"{meta['name']}_{meta['namespace']}({meta['uid']})"


def image_user(user: str) -> tuple[int | None, str]:
    """The image's USER as (numeric uid or None, user name or "")."""
    name = user.split(":", 1)[0]
    if not name:
        return 0, ""
    return (int(name), "") if name.isdigit() else (None, name)


def verify_run_as_non_root(pod: Mapping[str, Any], container: Mapping[str, Any], user: str) -> None:
    """The kubelet's verifyRunAsNonRoot, with its messages."""
    context = security_context(pod, container)
    if not context.get("runAsNonRoot"):
        return
    where = f"(pod: {pod_name(pod)!r}, container: {container['name']})".replace("'", '"')
    if context.get("runAsUser") is not None:
        if int(context["runAsUser"]) == 0:
            raise ConfigError(f"container's runAsUser breaks non-root policy {where}")
        return
    uid, name = image_user(user)
    if uid == 0:
        raise ConfigError(f"container has runAsNonRoot and image will run as root {where}")
    if uid is None:
        raise ConfigError(
            f"container has runAsNonRoot and image has non-numeric user ({name}), "
            f"cannot verify user is non-root {where}"
        )


@dataclass(frozen=True)
class Account:
    uid: int
    gid: int
    home: str


def _passwd(text: str | None) -> dict[str, tuple[int, int, str]]:
    found = {}
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 6 and fields[2].isdigit() and fields[3].isdigit():
            found[fields[0]] = (int(fields[2]), int(fields[3]), fields[5])
    return found


def _groups(text: str | None) -> dict[str, int]:
    found = {}
    for line in (text or "").splitlines():
        fields = line.split(":")
        if len(fields) >= 3 and fields[2].isdigit():
            found[fields[0]] = int(fields[2])
    return found


def account(
    pod: Mapping[str, Any], container: Mapping[str, Any], user: str, passwd: str | None, group: str | None
) -> Account:
    """Who the process runs as: runAsUser/runAsGroup, else the image's USER looked up in its /etc/passwd."""
    context = security_context(pod, container)
    users = _passwd(passwd)
    name, _, group_part = user.partition(":")
    by_uid = {uid: (gid, home) for uid, gid, home in users.values()}
    if context.get("runAsUser") is not None:
        uid = int(context["runAsUser"])
    elif not name:
        uid = 0
    elif name.isdigit():
        uid = int(name)
    elif name in users:
        uid = users[name][0]
    else:
        raise ConfigError(f"unable to find user {name}: no matching entries in passwd file")
    gid, home = by_uid.get(uid, (0, "/"))
    if context.get("runAsGroup") is not None:
        gid = int(context["runAsGroup"])
    elif group_part:
        if group_part.isdigit():
            gid = int(group_part)
        elif group_part in _groups(group):
            gid = _groups(group)[group_part]
        else:
            raise ConfigError(f"unable to find group {group_part}: no matching entries in group file")
    return Account(uid, gid, home or "/")


def capabilities(context: Mapping[str, Any]) -> list[str]:
    wanted = (context.get("capabilities") or {}) if context else {}
    drop = {str(c).upper().removeprefix("CAP_") for c in wanted.get("drop") or []}
    add = {str(c).upper().removeprefix("CAP_") for c in wanted.get("add") or []}
    chosen = set() if "ALL" in drop else set(DEFAULT_CAPABILITIES) - drop
    chosen |= add - {"ALL"}
    return [f"CAP_{name}" for name in sorted(chosen)]


@dataclass(frozen=True)
class Mount:
    source: str
    target: str
    read_only: bool


def _standard_mounts() -> list[dict[str, Any]]:
    """What every container gets (runc's defaults)."""
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue", "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs", "options": ["nosuid", "noexec", "nodev", "ro"]},
    ]  # fmt: skip


def bind(mount: Mount) -> dict[str, Any]:
    options = ["rbind", "rprivate"] + (["ro"] if mount.read_only else [])
    return {"destination": mount.target, "type": "bind", "source": mount.source, "options": options}


def runtime_config(
    *,
    process_args: Sequence[str],
    env: Mapping[str, str],
    cwd: str,
    user: Account,
    context: Mapping[str, Any],
    supplemental_groups: Sequence[int],
    hostname: str,
    netns_path: str,
    mounts: Sequence[Mount],
    memory_limit: int | None,
    cgroups_path: str,
) -> dict[str, Any]:
    """The OCI runtime configuration of one container (runc's config.json)."""
    caps = capabilities(context)
    linux: dict[str, Any] = {
        "namespaces": [
            {"type": "pid"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "mount"},
            {"type": "network", "path": netns_path},
        ],
        "cgroupsPath": cgroups_path,
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "maskedPaths": [
            "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
            "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
        ],
        "readonlyPaths": ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"],
    }  # fmt: skip
    if memory_limit is not None:
        linux["resources"]["memory"] = {"limit": memory_limit}
    profile = (context.get("seccompProfile") or {}).get("type")
    if profile == "RuntimeDefault":
        linux["seccomp"] = seccomp.runtime_default(caps)
    elif profile not in (None, "Unconfined"):
        raise ConfigError(f"seccompProfile type {profile} is not supported by the local node agent")
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": user.uid, "gid": user.gid, "additionalGids": sorted(set(supplemental_groups))},
            "args": list(process_args),
            "env": [f"{key}={value}" for key, value in env.items()],
            "cwd": cwd or "/",
            "capabilities": {"bounding": caps, "effective": caps, "permitted": caps},
            "noNewPrivileges": context.get("allowPrivilegeEscalation") is False,
        },
        "root": {"path": "rootfs", "readonly": bool(context.get("readOnlyRootFilesystem"))},
        "hostname": hostname,
        "mounts": _standard_mounts() + [bind(m) for m in mounts],
        "linux": linux,
    }
