"""The kubelet's decisions for a container from an image: what runs, as whom, with which capabilities."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_devenv.nodeagent import kubeletapi, oci, seccomp
from jobqueue_devenv.nodeagent.imagestore import Image

IMAGE = Image("localhost/x:1", "abc", ("/l",), entrypoint=("entry",), cmd=("default",), user="10001")
POD: dict[str, Any] = {"metadata": {"name": "p", "namespace": "n", "uid": "u"}, "spec": {}}


@pytest.mark.parametrize(
    ("container", "expected"),
    [
        ({}, ["entry", "default"]),
        ({"args": ["a", "$(X)"]}, ["entry", "a", "1"]),
        ({"command": ["c"]}, ["c"]),
        ({"command": ["c", "$(X)"], "args": ["b"]}, ["c", "1", "b"]),
    ],
)
def test_command_replaces_entrypoint_and_args_replace_cmd(container: dict[str, Any], expected: list[str]) -> None:
    assert oci.argv(container, IMAGE, {"X": "1"}) == expected


def test_an_image_without_entrypoint_or_cmd_and_no_command_is_a_config_error() -> None:
    with pytest.raises(oci.ConfigError, match="no command specified"):
        oci.argv({}, Image("localhost/empty:1", "id", ("/l",)), {})


def with_context(pod: dict[str, Any] | None = None, container: dict[str, Any] | None = None) -> tuple[Any, Any]:
    return {**POD, "spec": {"securityContext": pod or {}}}, {"name": "main", "securityContext": container or {}}


@pytest.mark.parametrize(
    ("user", "pod_context", "container_context", "message"),
    [
        ("", {"runAsNonRoot": True}, {}, "image will run as root"),
        ("0:0", {"runAsNonRoot": True}, {}, "image will run as root"),
        ("worker", {"runAsNonRoot": True}, {}, "non-numeric user (worker)"),
        ("10001", {"runAsNonRoot": True}, {"runAsUser": 0}, "runAsUser breaks non-root policy"),
    ],
)
def test_run_as_non_root_refusals_say_what_the_kubelet_says(
    user: str, pod_context: dict[str, Any], container_context: dict[str, Any], message: str
) -> None:
    pod, container = with_context(pod_context, container_context)
    with pytest.raises(oci.ConfigError, match=r"\(pod: \"p_n\(u\)\", container: main\)") as caught:
        oci.verify_run_as_non_root(pod, container, user)
    assert message in str(caught.value)


@pytest.mark.parametrize(
    ("user", "pod_context", "container_context"),
    [("10001", {"runAsNonRoot": True}, {}), ("", {"runAsNonRoot": True}, {"runAsUser": 5}), ("", {}, {})],
)
def test_run_as_non_root_passes_for_numeric_non_root_users(
    user: str, pod_context: dict[str, Any], container_context: dict[str, Any]
) -> None:
    pod, container = with_context(pod_context, container_context)
    oci.verify_run_as_non_root(pod, container, user)


PASSWD = "root:x:0:0:root:/root:/bin/sh\nworker:x:10001:10001::/app:/usr/sbin/nologin\n"
GROUP = "root:x:0:\nworker:x:10001:\nstaff:x:50:\n"


@pytest.mark.parametrize(
    ("user", "pod_context", "container_context", "expected"),
    [
        ("10001", {}, {}, oci.Account(10001, 10001, "/app")),
        ("worker", {}, {}, oci.Account(10001, 10001, "/app")),
        ("worker:staff", {}, {}, oci.Account(10001, 50, "/app")),
        ("65532:65532", {}, {}, oci.Account(65532, 65532, "/")),
        ("", {}, {}, oci.Account(0, 0, "/root")),
        ("10001", {"runAsUser": 7, "runAsGroup": 8}, {}, oci.Account(7, 8, "/")),
        ("10001", {"runAsUser": 7}, {"runAsUser": 9}, oci.Account(9, 0, "/")),
    ],
)
def test_the_account_is_the_images_user_unless_the_security_context_says_otherwise(
    user: str, pod_context: dict[str, Any], container_context: dict[str, Any], expected: oci.Account
) -> None:
    pod, container = with_context(pod_context, container_context)
    assert oci.account(pod, container, user, PASSWD, GROUP) == expected


def test_an_unknown_user_name_is_a_config_error() -> None:
    with pytest.raises(oci.ConfigError, match="unable to find user nobody"):
        oci.account(POD, {"name": "main"}, "nobody", PASSWD, GROUP)


def test_capabilities_start_from_the_runtime_defaults_and_drop_all_means_none() -> None:
    assert "CAP_NET_RAW" in oci.capabilities({})
    assert oci.capabilities({"capabilities": {"drop": ["ALL"]}}) == []
    assert oci.capabilities({"capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}) == [
        "CAP_NET_BIND_SERVICE"
    ]


def test_the_runtime_config_joins_the_pods_network_namespace_and_honours_read_only_and_limits() -> None:
    config = oci.runtime_config(
        process_args=["a"],
        env={"K": "V"},
        cwd="/app",
        user=oci.Account(1, 2, "/"),
        context={"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
        supplemental_groups=[3, 3],
        hostname="p",
        netns_path="/run/netns/jq0p2",
        mounts=[oci.Mount("/host/v", "/data", True)],
        memory_limit=64 * 1024 * 1024,
        cgroups_path="/jobqueue-jqbr0/x",
    )
    assert {"type": "network", "path": "/run/netns/jq0p2"} in config["linux"]["namespaces"]
    assert config["root"] == {"path": "rootfs", "readonly": True}
    assert config["process"]["noNewPrivileges"] is True
    assert config["process"]["user"] == {"uid": 1, "gid": 2, "additionalGids": [3]}
    assert config["linux"]["resources"]["memory"] == {"limit": 64 * 1024 * 1024}
    assert {"destination": "/data", "type": "bind", "source": "/host/v", "options": ["rbind", "rprivate", "ro"]} in (
        config["mounts"]
    )


def test_log_runs_current_previous_and_tail(tmp_path: Any) -> None:
    first, second = tmp_path / "0.log", tmp_path / "1.log"
    target = kubeletapi.LogTarget([first, second], lambda _: False)
    assert kubeletapi.choose_run(target, False, "p", "c") == (second, "")
    assert kubeletapi.choose_run(target, True, "p", "c") == (first, "")
    none, why = kubeletapi.choose_run(kubeletapi.LogTarget([first], lambda _: False), True, "p", "c")
    assert none is None
    assert why == 'previous terminated container "c" in pod "p" not found'
    assert kubeletapi.tail(b"a\nb\nc", 2) == b"b\nc"
    assert kubeletapi.tail(b"a\nb\n", 0) == b""


PROFILE = {
    "defaultAction": "SCMP_ACT_ERRNO",
    "defaultErrnoRet": 38,
    "archMap": [
        {"architecture": "SCMP_ARCH_X86_64", "subArchitectures": ["SCMP_ARCH_X86", "SCMP_ARCH_X32"]},
        {"architecture": "SCMP_ARCH_AARCH64", "subArchitectures": ["SCMP_ARCH_ARM"]},
    ],
    "syscalls": [
        {"names": ["read", "write"], "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}, "excludes": {}},
        {"names": ["mount"], "action": "SCMP_ACT_ALLOW", "includes": {"caps": ["CAP_SYS_ADMIN"]}, "excludes": {}},
        {"names": ["arch_prctl"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["amd64"]}},
        {"names": ["arm_fadvise64_64"], "action": "SCMP_ACT_ALLOW", "includes": {"arches": ["arm64"]}},
        {
            "names": ["vhangup"],
            "action": "SCMP_ACT_ERRNO",
            "errnoRet": 1,
            "excludes": {"caps": ["CAP_SYS_TTY_CONFIG"]},
        },
        {
            "names": ["personality"],
            "action": "SCMP_ACT_ALLOW",
            "args": [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
        },
    ],
}


def test_runtime_default_keeps_the_rules_that_fit_the_containers_capabilities_and_architecture() -> None:
    dropped_all = seccomp.linux_seccomp(PROFILE, [], "x86_64")
    assert dropped_all["defaultAction"] == "SCMP_ACT_ERRNO"
    assert dropped_all["defaultErrnoRet"] == 38
    assert dropped_all["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert [rule["names"] for rule in dropped_all["syscalls"]] == [
        ["read", "write"],
        ["arch_prctl"],
        ["vhangup"],
        ["personality"],
    ]
    assert dropped_all["syscalls"][2] == {"names": ["vhangup"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
    assert dropped_all["syscalls"][3]["args"] == [{"index": 0, "value": 0, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]
    admin = seccomp.linux_seccomp(PROFILE, ["CAP_SYS_ADMIN", "CAP_SYS_TTY_CONFIG"], "aarch64")
    assert admin["architectures"] == ["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert [rule["names"] for rule in admin["syscalls"]] == [
        ["read", "write"],
        ["mount"],
        ["arm_fadvise64_64"],
        ["personality"],
    ]


def _config(context: dict[str, Any]) -> dict[str, Any]:
    return oci.runtime_config(
        process_args=["a"],
        env={},
        cwd="/",
        user=oci.Account(1, 1, "/"),
        context=context,
        supplemental_groups=[],
        hostname="p",
        netns_path="/run/netns/jq0p2",
        mounts=[],
        memory_limit=None,
        cgroups_path="/x",
    )


def test_a_seccomp_profile_is_applied_only_when_the_pod_or_container_asks_for_it() -> None:
    pod = {"spec": {"securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}}}
    context = oci.security_context(pod, {"securityContext": {"capabilities": {"drop": ["ALL"]}}})
    applied = _config(context)["linux"]["seccomp"]
    assert applied["defaultAction"] == seccomp.default_profile()["defaultAction"]
    assert {"read", "write", "exit_group"} <= {name for rule in applied["syscalls"] for name in rule["names"]}
    unconfined = oci.security_context(pod, {"securityContext": {"seccompProfile": {"type": "Unconfined"}}})
    assert "seccomp" not in _config(unconfined)["linux"]
    assert "seccomp" not in _config({})["linux"]
    with pytest.raises(oci.ConfigError, match="seccompProfile type Localhost is not supported"):
        _config({"seccompProfile": {"type": "Localhost", "localhostProfile": "my.json"}})
