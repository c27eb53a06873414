"""A container's environment, built the way the kubelet builds it (pure functions, no I/O)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

SourceLookup = Callable[[str, str], Mapping[str, str] | None]
"""(namespace, name) -> decoded data of a Secret or ConfigMap, or None when it does not exist."""


class ConfigError(Exception):
    """The environment cannot be built (missing Secret, key...): the container waits, as with the kubelet."""


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes `$(VAR)` expansion: defined names are replaced, `$$` is a literal `$`, the rest is kept."""
    out: list[str] = []
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "$" or i + 1 == n:
            out.append(char)
            i += 1
            continue
        following = text[i + 1]
        if following == "$":
            out.append("$")
            i += 2
        elif following == "(":
            close = text.find(")", i + 2)
            if close == -1:
                out.append(text[i:])
                break
            name = text[i + 2 : close]
            out.append(env[name] if name in env else text[i : close + 1])
            i = close + 1
        else:
            out.append(char + following)
            i += 2
    return "".join(out)


def field_value(pod: Mapping[str, Any], path: str) -> str:
    """The value of a `fieldRef.fieldPath` the downward API supports."""
    metadata, spec, status = pod.get("metadata", {}), pod.get("spec", {}), pod.get("status") or {}
    simple = {
        "metadata.name": metadata.get("name"),
        "metadata.namespace": metadata.get("namespace"),
        "metadata.uid": metadata.get("uid"),
        "spec.nodeName": spec.get("nodeName"),
        "spec.serviceAccountName": spec.get("serviceAccountName"),
        "status.podIP": status.get("podIP"),
        "status.hostIP": status.get("hostIP"),
    }
    if path in simple:
        return str(simple[path] or "")
    for prefix, source in (("metadata.labels", "labels"), ("metadata.annotations", "annotations")):
        if path.startswith(prefix + "['") and path.endswith("']"):
            return str((metadata.get(source) or {}).get(path[len(prefix) + 2 : -2], ""))
    raise ConfigError(f"fieldRef {path!r} is not supported by the local node agent")


def _from_source(kind: str, ref: Mapping[str, Any], namespace: str, lookup: SourceLookup) -> str | None:
    data = lookup(namespace, ref["name"])
    optional = bool(ref.get("optional"))
    if data is None:
        if optional:
            return None
        raise ConfigError(f'{kind} "{ref["name"]}" not found')
    if ref["key"] not in data:
        if optional:
            return None
        raise ConfigError(f"couldn't find key {ref['key']} in {kind} {namespace}/{ref['name']}")
    return data[ref["key"]]


def container_env(
    pod: Mapping[str, Any],
    container: Mapping[str, Any],
    secrets: SourceLookup,
    config_maps: SourceLookup,
    base: Mapping[str, str],
) -> dict[str, str]:
    """`base` (PATH, HOSTNAME...), then `envFrom`, then `env` in order, each value `$(VAR)`-expanded
    against what is defined so far, as the kubelet does."""
    namespace = pod["metadata"]["namespace"]
    env = dict(base)
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        for kind, key, lookup in (("configmap", "configMapRef", config_maps), ("secret", "secretRef", secrets)):
            ref = source.get(key)
            if ref is None:
                continue
            data = lookup(namespace, ref["name"])
            if data is None:
                if ref.get("optional"):
                    continue
                raise ConfigError(f'{kind} "{ref["name"]}" not found')
            env.update({prefix + k: v for k, v in data.items()})
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var or not var.get("valueFrom"):
            env[name] = expand(var.get("value") or "", env)
            continue
        source = var["valueFrom"]
        value: str | None
        if "secretKeyRef" in source:
            value = _from_source("secret", source["secretKeyRef"], namespace, secrets)
        elif "configMapKeyRef" in source:
            value = _from_source("configmap", source["configMapKeyRef"], namespace, config_maps)
        elif "fieldRef" in source:
            value = field_value(pod, source["fieldRef"]["fieldPath"])
        else:
            raise ConfigError(f"env {name}: only secretKeyRef, configMapKeyRef and fieldRef are supported")
        if value is not None:
            env[name] = value
    return env


def command_line(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """`command` + `args` with `$(VAR)` expanded. Without `command` there is no image entrypoint to fall back on."""
    command = [expand(part, env) for part in container.get("command") or []]
    args = [expand(part, env) for part in container.get("args") or []]
    if not command:
        raise ConfigError("container has no command: a host process of the local node agent runs `command` + `args`")
    return command + args
