"""The node agent builds a container's environment and command line as the kubelet does."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_devenv.nodeagent.envvars import ConfigError, command_line, container_env, expand

POD: dict[str, Any] = {
    "metadata": {"name": "web-1", "namespace": "shop", "uid": "u-1", "labels": {"app": "web"}},
    "spec": {"nodeName": "node-a", "serviceAccountName": "default"},
    "status": {"podIP": "10.213.0.7", "hostIP": "127.0.0.1"},
}
SECRETS = {("shop", "redis"): {"password": "s3cret"}}
CONFIG_MAPS = {("shop", "settings"): {"queue": "emails", "level": "debug"}}


def _env(container: dict[str, Any], base: dict[str, str] | None = None) -> dict[str, str]:
    return container_env(
        POD, container, lambda ns, n: SECRETS.get((ns, n)), lambda ns, n: CONFIG_MAPS.get((ns, n)), base or {}
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("$(A)-$(B)", "1-two"),
        ("$(MISSING)", "$(MISSING)"),
        ("$$(A)", "$(A)"),
        ("cost $5", "cost $5"),
        ("$(A", "$(A"),
        ("end$", "end$"),
        ("$(A)$(A)", "11"),
    ],
)
def test_expand_follows_the_kubernetes_rules(text: str, expected: str) -> None:
    assert expand(text, {"A": "1", "B": "two"}) == expected


def test_literals_sources_and_fields_resolve_in_order() -> None:
    env = _env(
        {
            "env": [
                {"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}},
                {"name": "QUEUE", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "queue"}}},
                {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
                {"name": "IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
                {"name": "APP", "valueFrom": {"fieldRef": {"fieldPath": "metadata.labels['app']"}}},
                {"name": "URL", "value": "redis://:$(PASSWORD)@redis.$(NS).svc:6379/$(LATER)"},
                {"name": "LATER", "value": "0"},
            ]
        },
        base={"PATH": "/bin"},
    )
    assert env == {
        "PATH": "/bin",
        "PASSWORD": "s3cret",
        "QUEUE": "emails",
        "POD": "web-1",
        "NS": "shop",
        "IP": "10.213.0.7",
        "APP": "web",
        "URL": "redis://:s3cret@redis.shop.svc:6379/$(LATER)",  # only names defined before are expanded
        "LATER": "0",
    }


def test_env_from_adds_every_key_with_prefix_and_env_wins() -> None:
    env = _env(
        {
            "envFrom": [{"configMapRef": {"name": "settings"}, "prefix": "CFG_"}, {"secretRef": {"name": "redis"}}],
            "env": [{"name": "CFG_LEVEL", "value": "info"}],
        }
    )
    assert env == {"CFG_queue": "emails", "CFG_level": "debug", "password": "s3cret", "CFG_LEVEL": "info"}


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ({"secretKeyRef": {"name": "nope", "key": "k"}}, 'secret "nope" not found'),
        ({"secretKeyRef": {"name": "redis", "key": "user"}}, "couldn't find key user in secret shop/redis"),
        ({"configMapKeyRef": {"name": "nope", "key": "k"}}, 'configmap "nope" not found'),
        ({"fieldRef": {"fieldPath": "spec.weird"}}, "not supported"),
    ],
)
def test_missing_sources_are_config_errors(source: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _env({"env": [{"name": "X", "valueFrom": source}]})


def test_optional_missing_sources_are_skipped() -> None:
    env = _env(
        {
            "env": [
                {"name": "X", "valueFrom": {"secretKeyRef": {"name": "nope", "key": "k", "optional": True}}},
                {"name": "Y", "valueFrom": {"configMapKeyRef": {"name": "settings", "key": "no", "optional": True}}},
            ],
            "envFrom": [{"secretRef": {"name": "gone", "optional": True}}],
        }
    )
    assert env == {}


def test_command_and_args_are_expanded_and_joined() -> None:
    container = {"command": ["redis-server", "--requirepass", "$(PW)"], "args": ["--port", "$(PORT)", "$$(PW)"]}
    assert command_line(container, {"PW": "x", "PORT": "6379"}) == [
        "redis-server",
        "--requirepass",
        "x",
        "--port",
        "6379",
        "$(PW)",
    ]


def test_a_container_without_command_cannot_run() -> None:
    with pytest.raises(ConfigError, match="no command"):
        command_line({"args": ["x"]}, {})
