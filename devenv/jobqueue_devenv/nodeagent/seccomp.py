"""`seccompProfile: RuntimeDefault`: the container runtime's default seccomp profile, applied by runc.

The profile is the one podman and CRI-O apply by default (containers-common's `seccomp.json`, in Docker's
format, installed with podman, a tool `make images` needs anyway). `linux_seccomp` turns it into the OCI
runtime config's `linux.seccomp` for one container, as moby's and CRI-O's `setupSeccomp` do (pure): the
machine's architectures, and only the rules whose `includes`/`excludes` fit the container's capabilities
and architecture. Without a `seccompProfile` (or `Unconfined`) nothing is filtered, as with a kubelet
without `--seccomp-default`.
"""

from __future__ import annotations

import functools
import json
import platform
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Final

DEFAULT_PROFILE: Final = Path("/usr/share/containers/seccomp.json")
GO_ARCH: Final = {"x86_64": "amd64", "aarch64": "arm64", "ppc64le": "ppc64le", "s390x": "s390x"}
"""`platform.machine()` -> the architecture names of the profile's `includes`/`excludes` (Go's GOARCH)."""
SCMP_ARCH: Final = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}
"""`platform.machine()` -> the profile's `archMap` key."""
RULE_FIELDS: Final = ("names", "action", "args", "errnoRet")


def _applies(rule: Mapping[str, Any], capabilities: Collection[str], arch: str) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if not set(includes.get("caps") or ()) <= set(capabilities):
        return False  # a rule for containers with all of these capabilities
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if set(excludes.get("caps") or ()) & set(capabilities):
        return False  # a rule for containers with none of these
    return arch not in (excludes.get("arches") or ())


def linux_seccomp(profile: Mapping[str, Any], capabilities: Collection[str], machine: str) -> dict[str, Any]:
    """The OCI `linux.seccomp` of a Docker-format profile, for a container's capabilities on `machine`."""
    scmp = SCMP_ARCH.get(machine)
    architectures = [
        name
        for entry in profile.get("archMap") or []
        if entry.get("architecture") == scmp
        for name in (entry["architecture"], *(entry.get("subArchitectures") or ()))
    ]
    arch = GO_ARCH.get(machine, machine)
    syscalls = [
        {field: rule[field] for field in RULE_FIELDS if rule.get(field)}
        for rule in profile.get("syscalls") or []
        if _applies(rule, capabilities, arch)
    ]
    out: dict[str, Any] = {"defaultAction": profile["defaultAction"], "architectures": architectures}
    if profile.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = profile["defaultErrnoRet"]
    return {**out, "syscalls": syscalls}


@functools.cache
def default_profile() -> Mapping[str, Any]:
    """containers-common's profile, read once (OSError when podman's package is not installed)."""
    loaded: Mapping[str, Any] = json.loads(DEFAULT_PROFILE.read_text())
    return loaded


def runtime_default(capabilities: Collection[str]) -> dict[str, Any]:
    """`RuntimeDefault` for a container with these capabilities, on this machine."""
    return linux_seccomp(default_profile(), capabilities, platform.machine())
