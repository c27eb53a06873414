"""Build the project's images from its Dockerfiles with buildah: no Docker engine, no registry needed.

`make images` builds `jobqueue-operator`, `jobqueue-worker` and `jobqueue-examples` (tag `dev`, stored as
`localhost/<name>:dev` in the machine's containers-storage, where the node agent finds them) from the
Dockerfiles exactly as shipped; only `--build-arg` chooses the base. The base is, in this order:
`JQ_PYTHON_IMAGE` when set (pulled if missing), the Dockerfiles' own default (`python:3.11-slim`) when it
is already in local storage, or else a stand-in built once from Debian's packages with mmdebstrap
(Python 3.11 from bookworm) and cached as a tarball outside the repository.

Three facts of these machines are handled here (see docs/local-cluster.md): the process may not raise
its `nofile` limit to podman's default, so a containers.conf of our own caps the ulimits at this
process's hard limits; crun refuses the hybrid cgroup layout, so runc is the runtime; and outgoing TLS
may be re-signed by a proxy only the host's CA bundle trusts, so that bundle is mounted read-only into
the build steps (nothing of it enters an image).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import resource
import shutil
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.paths import cache_dir
from jobqueue_devenv.progress import Progress, minutes, say

REPO: Final = Path(__file__).resolve().parents[2]
TAG: Final = "dev"
HOST_CA_BUNDLE: Final = Path("/etc/ssl/certs/ca-certificates.crt")
BASE_IMAGE_VARIABLE: Final = "JQ_PYTHON_IMAGE"
TOOLS: Final = ("buildah", "podman", "runc", "mmdebstrap")
"""Debian packages `make images` needs (devenv/install-system-deps.sh installs them)."""


@dataclass(frozen=True)
class ImageBuild:
    """One image built from one Dockerfile of the repository."""

    name: str
    dockerfile: str
    """Relative to the repository."""
    context: str
    base_arg: str
    """The Dockerfile's ARG that names its base image."""
    expected_seconds: int
    """Cold, on 2 cores; a rebuild with buildah's layer cache takes a few seconds."""
    needs: tuple[str, ...] = field(default=())
    """Images of this project it is built FROM (built first)."""

    @property
    def reference(self) -> str:
        return reference(self.name)


def reference(name: str) -> str:
    """Where an image of ours is in local storage; Pods name it `jobqueue-worker:dev`, which resolves here."""
    return f"localhost/{name}:{TAG}"


WORKER: Final = ImageBuild("jobqueue-worker", "Dockerfile.worker", ".", "PYTHON_IMAGE", 30)
OPERATOR: Final = ImageBuild("jobqueue-operator", "Dockerfile.operator", ".", "PYTHON_IMAGE", 60)
EXAMPLES: Final = ImageBuild(
    "jobqueue-examples", "examples/Dockerfile", "examples", "WORKER_IMAGE", 10, needs=(WORKER.name,)
)
ALL_IMAGES: Final = (WORKER, OPERATOR, EXAMPLES)
"""Build order: the examples' image is FROM the worker image."""

MAX_NPROC: Final = 32768
"""Build steps fail with EPERM when runc sets a higher nproc limit here, even below this process's own hard limit."""

BASE_SUITE: Final = "bookworm"
"""Debian 12: Python 3.11, as the Dockerfiles' python:3.11-slim."""
BASE_PACKAGES: Final = ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates")
BASE_EXPECTED_SECONDS: Final = 90
_BASE_OPTIONS: Final = (
    "--variant=minbase",
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
    # python:3.11-slim has no PEP 668 marker: `pip install` into the system Python works there, so here too.
    '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
)
_BASE_CHANGES: Final = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
    'CMD ["python3"]',
)


def _base_key() -> str:
    recipe = json.dumps([BASE_SUITE, BASE_PACKAGES, _BASE_OPTIONS, _BASE_CHANGES])
    return hashlib.sha256(recipe.encode()).hexdigest()[:12]


BASE_IMAGE: Final = f"localhost/jobqueue-python-base:{BASE_SUITE}-{_base_key()}"
"""The stand-in for python:3.11-slim; its name changes with its recipe, so a changed recipe rebuilds it."""


def _images_cache() -> Path:
    return cache_dir() / "images"


def containers_conf() -> Path:
    """Our containers.conf (selected with CONTAINERS_CONF): ulimits this process may set, runc."""
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    nproc = min(resource.getrlimit(resource.RLIMIT_NPROC)[1], MAX_NPROC)
    limits = [f"nofile={nofile}:{nofile}"] if nofile != resource.RLIM_INFINITY else []
    limits += [f"nproc={nproc}:{nproc}"] if nproc != resource.RLIM_INFINITY else []
    text = (
        "# Written by jobqueue_devenv.images: podman's default ulimits exceed this machine's hard limits,\n"
        "# and crun refuses its hybrid cgroup layout.\n"
        f'[containers]\ndefault_ulimits = {json.dumps(limits)}\n\n[engine]\nruntime = "runc"\n'
    )
    path = _images_cache() / "containers.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def tool_env() -> dict[str, str]:
    """The environment of every buildah/podman command of ours."""
    return dict(os.environ, CONTAINERS_CONF=str(containers_conf()))


def check_tools() -> None:
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if missing:
        raise DevenvError(
            f"image tools missing: {', '.join(missing)}",
            "run `make system-deps` (Debian packages buildah, podman, runc, mmdebstrap)",
        )


def exists(image: str) -> bool:
    """Is `image` in local storage? (A short name such as `jobqueue-worker:dev` resolves to localhost/.)"""
    done = subprocess.run(["podman", "image", "exists", image], env=tool_env(), capture_output=True, check=False)
    return done.returncode == 0


def dockerfile_default(build: ImageBuild) -> str:
    """The default of the Dockerfile's base-image ARG, as shipped (e.g. python:3.11-slim)."""
    text = (REPO / build.dockerfile).read_text()
    match = re.search(rf"^ARG {build.base_arg}=(\S+)", text, re.M)
    if match is None:
        raise DevenvError(f"{build.dockerfile} has no `ARG {build.base_arg}=...`", "restore the ARG line")
    return match.group(1)


def python_image() -> tuple[str, bool]:
    """(base image for the Python Dockerfiles, whether buildah may pull it)."""
    explicit = os.environ.get(BASE_IMAGE_VARIABLE)
    if explicit:
        return explicit, True
    shipped = dockerfile_default(WORKER)
    if exists(shipped):
        return shipped, False
    ensure_base()
    return BASE_IMAGE, False


# --- running the tools -----------------------------------------------------------------------------


def _log(name: str) -> Path:
    path = cache_dir() / "logs" / f"image-{name}.log"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("")
    return path


def _run(args: Sequence[str], log: Path, progress: Progress, step: re.Pattern[str], what: str) -> None:
    """Run a build tool, its output to `log`; lines matching `step` become the progress text."""
    with log.open("a") as sink:
        sink.write(f"$ {' '.join(args)}\n")
        sink.flush()
        proc = subprocess.Popen(
            args, env=tool_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=REPO
        )
        assert proc.stdout is not None
        tail: list[str] = []
        for line in proc.stdout:
            sink.write(line)
            tail = [*tail[-20:], line.rstrip()]
            if match := step.search(line):
                progress.update(match.group(0).strip()[:80])
        code = proc.wait()
    progress.done()
    if code != 0:
        errors = [line for line in tail if "error" in line.lower()] or tail or ["(no output)"]
        raise DevenvError(f"{what} failed (exit {code}): {errors[-1]}", f"full output in {log}")


def _apt_sources() -> list[str]:
    """The host's apt sources files: the stand-in base comes from the same Debian mirror as the host's packages."""
    folder = Path("/etc/apt/sources.list.d")
    found = [Path("/etc/apt/sources.list"), *sorted(folder.glob("*.sources")), *sorted(folder.glob("*.list"))]
    return [str(p) for p in found if p.is_file() and p.read_text().strip() and _debian(p.read_text())]


def _debian(text: str) -> bool:
    return any(word in text for word in ("/debian", "debian-security"))


def ensure_base() -> str:
    """The stand-in base image: from local storage, else imported from the cached tarball, else built."""
    if exists(BASE_IMAGE):
        return BASE_IMAGE
    tarball = _images_cache() / f"{BASE_IMAGE.rsplit('/', 1)[1].replace(':', '-')}.tar"
    if not tarball.exists():
        started = time.monotonic()
        log = _log("python-base")
        say(
            f"building the stand-in Python base image from Debian {BASE_SUITE} packages with mmdebstrap "
            f"(no registry serves python:3.11-slim here); once, about {minutes(BASE_EXPECTED_SECONDS)} on "
            f"2 cores, then cached in {tarball.parent}. Log: {log}"
        )
        partial = tarball.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        args = [
            "mmdebstrap",
            "--format=tar",
            *_BASE_OPTIONS,
            f"--include={','.join(BASE_PACKAGES)}",
            BASE_SUITE,
            str(partial),
        ]
        _run([*args, *_apt_sources()], log, Progress("python base"), re.compile(r"^I: .*"), "mmdebstrap")
        partial.rename(tarball)
        say(f"built the base root filesystem in {minutes(time.monotonic() - started)} -> {tarball}")
    changes = [arg for change in _BASE_CHANGES for arg in ("--change", change)]
    log = _log("python-base-import")
    _run(["podman", "import", *changes, str(tarball), BASE_IMAGE], log, Progress("import"), re.compile(r"^$"), "import")
    return BASE_IMAGE


def build(image: ImageBuild, base: str, may_pull: bool) -> None:
    """`buildah bud` of one Dockerfile; buildah's layer cache makes an unchanged rebuild take seconds."""
    log = _log(image.name)
    started = time.monotonic()
    say(
        f"building image {image.reference} from {image.dockerfile} (FROM {base}); "
        f"about {image.expected_seconds} s cold, seconds when cached. Log: {log}"
    )
    args = [
        "buildah", "bud", "--layers", *host_access(), *(() if may_pull else ("--pull-never",)),
        "--build-arg", f"{image.base_arg}={base}",
        "--label", f"dev.jobqueue.base={base}",
        "-f", str(REPO / image.dockerfile), "-t", image.reference,
        str(REPO / image.context),
    ]  # fmt: skip
    _run(args, log, Progress(image.name), re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+:.*"), f"building {image.reference}")
    say(f"built {image.reference} in {time.monotonic() - started:.0f}s ({size_mb(image.reference):.0f} MB)")


def ensure(names: Sequence[str] = ()) -> dict[str, str]:
    """Build the named images (all when empty) and what they are built FROM; returns name -> reference."""
    check_tools()
    wanted = {b.name for b in ALL_IMAGES if not names or b.name in names}
    for b in ALL_IMAGES:
        if b.name in wanted:
            wanted.update(b.needs)
    unknown = set(names) - {b.name for b in ALL_IMAGES}
    if unknown:
        raise DevenvError(f"unknown image {sorted(unknown)[0]}", f"choose from {', '.join(b.name for b in ALL_IMAGES)}")
    python, may_pull = python_image()
    built: dict[str, str] = {}
    for b in ALL_IMAGES:
        if b.name in wanted:
            base = python if b.base_arg == "PYTHON_IMAGE" else reference(b.needs[0])
            build(b, base, may_pull and b.base_arg == "PYTHON_IMAGE")
            built[b.name] = b.reference
    return built


def missing() -> list[str]:
    """Our images that are not in local storage (the e2e tests need them: `make images`)."""
    return [b.reference for b in ALL_IMAGES if not exists(b.reference)]


def inspect(image: str) -> Mapping[str, object]:
    done = subprocess.run(
        ["podman", "image", "inspect", image], env=tool_env(), capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise DevenvError(f"image {image} not found in local storage", "run `make images`")
    found: list[Mapping[str, object]] = json.loads(done.stdout)
    return found[0]


def size_mb(image: str) -> float:
    size = inspect(image).get("Size", 0)
    return float(size if isinstance(size, int | float) else 0) / 1e6


def host_access() -> list[str]:
    """`buildah bud` options that let build steps reach the package index as the host does: the host
    network (no bridge or firewall set-up) and the host's CA bundle, read-only (outgoing TLS may be
    re-signed by a proxy only that bundle trusts; nothing of it enters the image)."""
    args = ["--network=host"]
    if HOST_CA_BUNDLE.is_file():
        args += ["-v", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
    return args


def user_build_args(tag: str, context: Path, dockerfile: Path) -> list[str]:
    """`buildah bud` of a user's own image (FROM jobqueue-worker:dev or anything else), as `make images`
    builds ours; stored in local storage, where the local cluster's node finds it by `tag`."""
    return ["buildah", "bud", "--layers", *host_access(), "-f", str(dockerfile), "-t", tag, str(context)]


def build_user(tag: str, context: Path, dockerfile: Path | None = None) -> str:
    """`python -m jobqueue_devenv build` / `make user-image`: build output goes to the terminal as it comes
    (pip's own words when a requirement conflicts); returns the stored reference."""
    check_tools()
    if not context.is_dir():
        raise DevenvError(f"build context {context} is not a folder", "pass the folder your Dockerfile COPYs from")
    chosen = dockerfile if dockerfile is not None else context / "Dockerfile"
    if not chosen.is_file():
        raise DevenvError(f"no Dockerfile at {chosen}", "pass -f PATH (make user-image DOCKERFILE=PATH)")
    done = subprocess.run(user_build_args(tag, context, chosen), env=tool_env(), check=False)
    if done.returncode != 0:
        raise DevenvError(f"building {tag} failed (exit {done.returncode})", "the build's own output is above")
    stored = tag if "/" in tag.split(":", 1)[0] else f"localhost/{tag}"
    say(f"built {stored}: name it in a JobQueue as `image: {tag}` (the local node uses it, never pulls it)")
    return stored


def build_derived(reference_name: str, dockerfile: str, context: Path) -> str:
    """Build an image from Dockerfile text in `context` (a user's image FROM ours: tests, docs/worker.md's
    example). Only local images as bases; returns its reference."""
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(dockerfile)
    args = ["buildah", "bud", "--layers", "--pull-never", *host_access(), "-t", reference_name, str(context)]
    done = subprocess.run(args, env=tool_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DevenvError(f"building {reference_name} failed: {_last(done.stdout + done.stderr)}", "see the Dockerfile")
    return reference_name


def _last(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "(no output)"
