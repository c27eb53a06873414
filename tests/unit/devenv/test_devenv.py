"""Fast checks of the local-cluster tooling that need no cluster: errors, certificates, lookup rules."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jobqueue_devenv import binaries, cluster, pki, versions
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.processes import ProcessRecord
from jobqueue_devenv.waiting import TimedOut, wait_until

DEVENV = Path(__file__).resolve().parents[3] / "devenv"


def run_devenv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobqueue_devenv", *args],
        env={"PYTHONPATH": str(DEVENV), "HOME": os.environ.get("HOME", "/root"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def fake_go(folder: Path, script: str) -> Path:
    """A `go` executable on its own PATH folder that behaves as `script` says."""
    folder.mkdir(parents=True, exist_ok=True)
    go = folder / "go"
    go.write_text("#!/bin/sh\n" + script)
    go.chmod(0o755)
    return folder


def test_wait_until_returns_the_first_truthy_value() -> None:
    calls = iter([None, 0, "ready"])
    assert wait_until(lambda: next(calls), timeout=5, what="x", interval=0.01) == "ready"


def test_wait_until_names_what_it_waited_for_and_the_last_error() -> None:
    def broken() -> None:
        raise ConnectionRefusedError("nobody home")

    with pytest.raises(TimedOut, match=r"waiting for the apiserver \(last error: nobody home\)"):
        wait_until(broken, timeout=0.2, what="the apiserver", interval=0.05)


@pytest.mark.parametrize(
    ("text", "expected"),
    [("go1.26.8", (1, 26)), ("go version go1.19.8 linux/amd64", (1, 19)), ("devel", None)],
)
def test_parse_go_version(text: str, expected: tuple[int, int] | None) -> None:
    assert binaries.parse_go_version(text) == expected


def test_certificates_chain_to_the_ca_and_carry_the_right_names(tmp_path: Path) -> None:
    generated = pki.generate(tmp_path, ["jobqueue-local", "jobqueue-local-2"])
    ca = x509.load_pem_x509_certificate(generated.ca_cert.read_bytes())
    serving = x509.load_pem_x509_certificate(generated.apiserver_cert.read_bytes())
    admin = x509.load_pem_x509_certificate(generated.admin_cert.read_bytes())
    node = x509.load_pem_x509_certificate(generated.kubelet_cert("jobqueue-local-2").read_bytes())
    for leaf in (serving, admin, node):
        leaf.verify_directly_issued_by(ca)
    assert node.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "system:node:jobqueue-local-2"
    node_sans = node.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert node_sans.get_values_for_type(x509.DNSName) == ["jobqueue-local-2"]
    sans = serving.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "kubernetes.default.svc" in sans.get_values_for_type(x509.DNSName)
    assert "127.0.0.1" in [str(ip) for ip in sans.get_values_for_type(x509.IPAddress)]
    assert admin.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == "system:masters"
    usage = admin.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in usage
    assert generated.admin_key.stat().st_mode & 0o077 == 0, "private keys are private"


def test_cluster_state_survives_a_save_and_load(tmp_path: Path) -> None:
    state = cluster.ClusterState(
        directory=str(tmp_path),
        kubeconfig=str(tmp_path / "kubeconfig"),
        ports={"kube-apiserver": 6443},
        processes=[ProcessRecord("etcd", 42, "/bin/etcd")],
        timings={"etcd /health": 0.5},
    )
    state.save()
    assert cluster.ClusterState.load(tmp_path) == state
    assert cluster.ClusterState.load(tmp_path / "elsewhere") is None


def test_kubebuilder_assets_are_preferred_over_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path / "assets"))
    (tmp_path / "assets").mkdir()
    apiserver = tmp_path / "assets" / "kube-apiserver"
    apiserver.write_text("#!/bin/sh\n")
    apiserver.chmod(0o755)
    assert binaries.locate("kube-apiserver", binaries.KUBERNETES) == apiserver
    assert binaries.locate("kube-scheduler", binaries.KUBERNETES) is None
    assert binaries.KUBERNETES in binaries.missing_builds()


@pytest.mark.parametrize(("module", "release"), [("v0.309.1", "3.9.1"), ("v0.310.0", "3.10.0"), ("v0.400.2", "4.0.2")])
def test_a_prometheus_module_version_names_its_release(module: str, release: str) -> None:
    assert binaries.prometheus_release(module) == release


def test_a_missing_test_tool_names_the_make_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("KUBEBUILDER_ASSETS", raising=False)
    with pytest.raises(DevenvError, match="promtool") as raised:
        binaries.tool("promtool")
    assert "make test-tools" in raised.value.remedy
    assert binaries.PROMETHEUS in binaries.missing_builds(binaries.TOOL_BUILDS)
    assert binaries.PROMETHEUS not in binaries.missing_builds()  # the cluster does not need it


def test_missing_go_toolchain_is_a_one_line_error(tmp_path: Path) -> None:
    result = run_devenv("binaries", env={"PATH": "/nonexistent", "JQ_CACHE_DIR": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.splitlines()[0] == "error: Go toolchain not found: the control plane is built from Go modules"
    assert "KUBEBUILDER_ASSETS" in result.stderr
    assert "Traceback" not in result.stderr


def test_too_old_go_toolchain_is_refused(tmp_path: Path) -> None:
    path = fake_go(tmp_path / "bin", 'echo "go1.19.8"\n')
    result = run_devenv("binaries", env={"PATH": f"{path}:/usr/bin:/bin", "JQ_CACHE_DIR": str(tmp_path / "cache")})
    assert result.returncode == 2
    need = ".".join(map(str, versions.MIN_GO_VERSION))
    assert f"error: Go go1.19.8 is too old: need {need} or newer" in result.stderr


def test_a_failed_build_names_the_step_and_the_log(tmp_path: Path) -> None:
    script = (
        'case "$1 $2" in\n'
        '  "env GOVERSION") echo go1.26.8 ;;\n'
        '  "mod init") : > go.mod ;;\n'
        '  *) echo "go: k8s.io/kubernetes@v1.36.3: reading module: connection refused" >&2; exit 1 ;;\n'
        "esac\n"
    )
    path = fake_go(tmp_path / "bin", script)
    cache = tmp_path / "cache"
    result = run_devenv("binaries", env={"PATH": f"{path}:/usr/bin:/bin", "JQ_CACHE_DIR": str(cache)})
    assert result.returncode == 2
    assert "error: downloading go.etcd.io/etcd/server/v3@" in result.stderr
    assert "connection refused" in result.stderr
    assert f"full output in {cache}/logs/build-etcd-" in result.stderr
    assert not (cache / "bin").exists(), "a failed build leaves no binaries folder behind"
