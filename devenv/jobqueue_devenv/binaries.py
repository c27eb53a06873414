"""Find or build the binaries of the local cluster: etcd, the Kubernetes control plane, kubectl, helm.

No registry ships a kube-apiserver, so it is compiled with the Go toolchain from the Go module proxy.
`k8s.io/kubernetes` cannot be `go install`ed (its go.mod maps every staging module to a local
folder with `replace`), so each build happens in a small wrapper module of our own that requires
the release and replaces each staging module with its published `v0.<minor>.<patch>` version.

Binaries land in the cache (see `paths.cache_dir`) under a folder named after their version and are
reused from there. A folder named by `KUBEBUILDER_ASSETS` (envtest's variable) is searched first.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from jobqueue_devenv import versions
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.paths import cache_dir
from jobqueue_devenv.progress import Progress, minutes, say


@dataclass(frozen=True)
class GoBuild:
    """One `go build` in one wrapper module, producing one or more binaries."""

    name: str
    version: str
    module: str
    """The module whose release is built (required by the wrapper)."""
    packages: tuple[str, ...]
    """Main packages to build."""
    binaries: tuple[str, ...]
    """The file name of each package's binary, in the same order."""
    ldflags: tuple[str, ...] = ()
    replace_staging: bool = False
    """Replace every `./staging/src/k8s.io/*` module of `module` with its published version."""
    expected_minutes: str = ""
    variant: str = ""
    """Part of the cache folder's name besides the version: a change of ldflags that must rebuild."""

    @property
    def bin_dir(self) -> Path:
        return cache_dir() / "bin" / f"{self.name}-{self.version}{self.variant}"

    @property
    def src_dir(self) -> Path:
        return cache_dir() / "src" / f"{self.name}-{self.version}"


def _version_ldflags(version: str) -> tuple[str, ...]:
    """The -X flags Kubernetes' own build sets, so `kubectl version` reports the real release."""
    major, minor = version.lstrip("v").split(".")[:2]
    flags: list[str] = []
    for package in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
        flags += [
            f"-X {package}.gitVersion={version}",
            f"-X {package}.gitMajor={major}",
            f"-X {package}.gitMinor={minor}",
            f"-X {package}.gitTreeState=clean",
        ]
    return tuple(flags)


_K8S_COMMANDS: Final = ("kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl")
KUBERNETES: Final = GoBuild(
    name="kubernetes",
    version=versions.K8S_VERSION,
    module="k8s.io/kubernetes",
    packages=tuple(f"k8s.io/kubernetes/cmd/{cmd}" for cmd in _K8S_COMMANDS),
    binaries=_K8S_COMMANDS,
    ldflags=_version_ldflags(versions.K8S_VERSION),
    replace_staging=True,
    expected_minutes="6-10",
)
ETCD: Final = GoBuild(
    name="etcd",
    version=versions.ETCD_VERSION,
    module="go.etcd.io/etcd/server/v3",
    packages=("go.etcd.io/etcd/server/v3",),
    binaries=("etcd",),
    expected_minutes="1-2",
)
HELM: Final = GoBuild(
    name="helm",
    version=versions.HELM_VERSION,
    module="helm.sh/helm/v3",
    packages=("helm.sh/helm/v3/cmd/helm",),
    binaries=("helm",),
    # As helm's own Makefile: the Kubernetes version it assumes without a cluster (versions.HELM_KUBE_VERSION).
    ldflags=(
        f"-X helm.sh/helm/v3/internal/version.version={versions.HELM_VERSION}",
        *(
            f"-X helm.sh/helm/v3/pkg/{package}.k8sVersion{part}={number}"
            for package in ("chartutil", "lint/rules")
            for part, number in zip(("Major", "Minor"), versions.HELM_KUBE_VERSION.split("."), strict=True)
        ),
    ),
    expected_minutes="2-4",
    variant=f"-kube{versions.HELM_KUBE_VERSION}",
)
ALL_BUILDS: Final = (ETCD, KUBERNETES, HELM)
"""What the local cluster runs: `make binaries`, `make cluster-up`, `make demo`."""


def prometheus_release(module_version: str) -> str:
    """The release a Prometheus module version is: v0.309.1 -> 3.9.1."""
    minor, patch = module_version.removeprefix("v0.").split(".")
    return f"{int(minor) // 100}.{int(minor) % 100}.{patch}"


PROMETHEUS: Final = GoBuild(
    name="prometheus",
    version=versions.PROMETHEUS_VERSION,
    module="github.com/prometheus/prometheus",
    packages=("github.com/prometheus/prometheus/cmd/prometheus", "github.com/prometheus/prometheus/cmd/promtool"),
    binaries=("prometheus", "promtool"),
    ldflags=(f"-X github.com/prometheus/common/version.Version={prometheus_release(versions.PROMETHEUS_VERSION)}",),
    expected_minutes="4-8",
)
PINT: Final = GoBuild(
    name="pint",
    version=versions.PINT_VERSION,
    module="github.com/cloudflare/pint",
    packages=("github.com/cloudflare/pint/cmd/pint",),
    binaries=("pint",),
    ldflags=(f"-X main.version={versions.PINT_VERSION}",),
    expected_minutes="1-3",
)
HELM_DOCS: Final = GoBuild(
    name="helm-docs",
    version=versions.HELM_DOCS_VERSION,
    module="github.com/norwoodj/helm-docs",
    packages=("github.com/norwoodj/helm-docs/cmd/helm-docs",),
    binaries=("helm-docs",),
    expected_minutes="1",
)
TOOL_BUILDS: Final = (PROMETHEUS, PINT, HELM_DOCS)
"""What only the tests run (a real Prometheus for the metric source, the alert rules and the dashboards;
pint for the rules; helm-docs for the chart README): `make test-tools`, part of `make test`."""

ENVTEST_VARIABLE: Final = "KUBEBUILDER_ASSETS"


@dataclass(frozen=True)
class Binaries:
    """Paths to every binary the local cluster runs."""

    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path
    kube_scheduler: Path
    kubectl: Path
    helm: Path

    @property
    def bin_dirs(self) -> list[Path]:
        """Folders to put on PATH so `kubectl` and `helm` are the matching versions."""
        dirs: list[Path] = []
        for path in (self.kubectl, self.helm, self.etcd):
            if path.parent not in dirs:
                dirs.append(path.parent)
        return dirs


def _envtest_dir() -> Path | None:
    value = os.environ.get(ENVTEST_VARIABLE)
    return Path(value) if value else None


def locate(binary: str, build: GoBuild) -> Path | None:
    """Where `binary` is: the KUBEBUILDER_ASSETS folder first, then the cache."""
    candidates = [build.bin_dir / binary]
    envtest = _envtest_dir()
    if envtest is not None:
        candidates.insert(0, envtest / binary)
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def missing_builds(builds: Sequence[GoBuild] = ALL_BUILDS) -> list[GoBuild]:
    """The builds at least one of whose binaries is neither in KUBEBUILDER_ASSETS nor cached."""
    return [build for build in builds if any(locate(b, build) is None for b in build.binaries)]


def tool(binary: str) -> Path:
    """The path of a test tool (`prometheus`, `promtool`, `pint`, `helm-docs`); raises DevenvError naming
    what to run if missing."""
    for build in TOOL_BUILDS:
        if binary in build.binaries:
            found = locate(binary, build)
            if found is None:
                raise DevenvError(f"{binary} {build.version} is not built yet", "run `make test-tools` first")
            return found
    raise ValueError(f"{binary} is not a test tool")


def find() -> Binaries:
    """Paths to all binaries; raises DevenvError naming what to run when some are missing."""
    missing = missing_builds()
    if missing:
        names = ", ".join(f"{b.name} {b.version}" for b in missing)
        raise DevenvError(f"control-plane binaries not built yet: {names}", "run `make binaries` first")

    def path(binary: str, build: GoBuild) -> Path:
        found = locate(binary, build)
        assert found is not None  # checked by missing_builds()
        return found

    return Binaries(
        etcd=path("etcd", ETCD),
        kube_apiserver=path("kube-apiserver", KUBERNETES),
        kube_controller_manager=path("kube-controller-manager", KUBERNETES),
        kube_scheduler=path("kube-scheduler", KUBERNETES),
        kubectl=path("kubectl", KUBERNETES),
        helm=path("helm", HELM),
    )


def ensure(tools: bool = False) -> Binaries:
    """Build whatever of the cluster's binaries (and with `tools`, the tests' tools) is missing, then
    return the paths of the cluster's binaries."""
    missing = missing_builds(ALL_BUILDS + TOOL_BUILDS if tools else ALL_BUILDS)
    if missing:
        go = check_go_toolchain()
        for build in missing:
            _build(go, build)
    return find()


# --- building --------------------------------------------------------------------------------------


def parse_go_version(text: str) -> tuple[int, int] | None:
    """`go1.26.8` (or `go version go1.26.8 linux/amd64`) -> (1, 26)."""
    match = re.search(r"go(\d+)\.(\d+)", text)
    return (int(match.group(1)), int(match.group(2))) if match else None


def check_go_toolchain() -> str:
    """Path of a Go toolchain new enough for the pinned releases, or a DevenvError saying what to do."""
    need = ".".join(map(str, versions.MIN_GO_VERSION))
    remedy = (
        f"install Go {need} or newer and put `go` on PATH, or set {ENVTEST_VARIABLE} "
        "to a folder holding prebuilt etcd, kube-apiserver, kube-controller-manager, kube-scheduler, "
        "kubectl and helm"
    )
    go = shutil.which("go")
    if go is None:
        raise DevenvError("Go toolchain not found: the control plane is built from Go modules", remedy)
    out = subprocess.run([go, "env", "GOVERSION"], capture_output=True, text=True, check=False).stdout
    have = parse_go_version(out)
    if have is None or have < versions.MIN_GO_VERSION:
        raise DevenvError(f"Go {out.strip() or '(unknown version)'} is too old: need {need} or newer", remedy)
    return go


def _go_env() -> dict[str, str]:
    """Build environment: never fetch another toolchain, static binaries."""
    env = dict(os.environ)
    env.update(GOTOOLCHAIN="local", CGO_ENABLED="0", GOFLAGS="-mod=mod -buildvcs=false")
    return env


def _run(args: Sequence[str], cwd: Path, log: Path, what: str) -> str:
    """Run a go command, appending its output to `log`; a failure becomes a DevenvError."""
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(args)}\n")
        sink.flush()
        proc = subprocess.run(args, cwd=cwd, env=_go_env(), capture_output=True, text=True, check=False)
        sink.write(proc.stderr)
    if proc.returncode != 0:
        raise DevenvError(f"{what} failed: {_last_line(proc.stderr)}", f"full output in {log}")
    return proc.stdout


def _last_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"


def _prepare_wrapper(go: str, build: GoBuild, log: Path) -> None:
    """Write the wrapper module that pins `build.module` at its release."""
    src = build.src_dir
    src.mkdir(parents=True, exist_ok=True)
    if not (src / "go.mod").exists():
        _run([go, "mod", "init", f"jobqueue.dev/devenv/{build.name}"], src, log, "go mod init")
    target = f"{build.module}@{build.version}"
    info = json.loads(_run([go, "mod", "download", "-json", target], src, log, f"downloading {target}"))
    upstream_gomod = Path(info["GoMod"]).read_text()
    # Follow the release's own `go` and `godebug` lines: they decide GODEBUG defaults for the binary.
    if go_line := re.search(r"^go (\S+)$", upstream_gomod, re.M):
        _run([go, "mod", "edit", f"-go={go_line.group(1)}"], src, log, "go mod edit")
    if build.replace_staging:
        staging = re.findall(r"^\s*(k8s\.io/\S+) => \./staging/", upstream_gomod, re.M)
        published = "v0." + build.version.removeprefix("v1.")
        edits = [f"-replace={module}={module}@{published}" for module in staging]
        _run([go, "mod", "edit", *edits], src, log, "go mod edit")
    # A file that imports the packages keeps `go mod tidy`-style resolution honest for all of them.
    imports = "\n".join(f'\t_ "{package}"' for package in build.packages)
    (src / "tools.go").write_text(f"//go:build tools\n\npackage tools\n\nimport (\n{imports}\n)\n")
    _run([go, "get", *(f"{p}@{build.version}" for p in build.packages)], src, log, f"resolving {target}")


def _build(go: str, build: GoBuild) -> None:
    """Build one release into a temporary folder, then move it into place (never half a cache)."""
    log = cache_dir() / "logs" / f"build-{build.name}-{build.version}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    say(
        f"building {build.name} {build.version} from Go modules "
        f"({', '.join(build.binaries)}); a first build takes about {build.expected_minutes} min "
        f"on 2 cores, later builds reuse the Go cache. Log: {log}"
    )
    _prepare_wrapper(go, build, log)
    deps = _run([go, "list", "-deps", *build.packages], build.src_dir, log, "listing packages")
    total = len(deps.split())
    staging = build.bin_dir.with_name(build.bin_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    args = [go, "build", "-v", "-trimpath", "-ldflags", " ".join(("-s", "-w", *build.ldflags))]
    # One package: name its binary; several: `go build` names each after its package (kube-apiserver...).
    output = f"{staging}/{build.binaries[0]}" if len(build.packages) == 1 else f"{staging}/"
    args += ["-o", output, *build.packages]
    started = time.monotonic()
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(args)}\n")
        proc = subprocess.Popen(args, cwd=build.src_dir, env=_go_env(), stderr=subprocess.PIPE, stdout=sink, text=True)
        assert proc.stderr is not None
        progress = Progress(build.name, started)
        tail: list[str] = []
        for count, line in enumerate(proc.stderr, start=1):
            sink.write(line)
            tail = [*tail[-20:], line.rstrip()]
            shown = min(count, total)
            progress.update(f"compiled {shown}/{total} packages ({100 * shown // max(total, 1)}%)")
        code = proc.wait()
    progress.done()
    if code != 0:
        errors = [line for line in tail if ": " in line] or tail
        raise DevenvError(
            f"building {build.name} {build.version} failed (go build exit {code}): {errors[-1] if errors else ''}",
            f"full output in {log}",
        )
    shutil.rmtree(build.bin_dir, ignore_errors=True)
    staging.rename(build.bin_dir)
    say(f"built {build.name} {build.version} in {minutes(time.monotonic() - started)} -> {build.bin_dir}")
