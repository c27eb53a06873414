"""Build the project's images from its Dockerfiles with buildah: no Docker engine, no registry needed.

`make images` builds `jobqueue-operator`, `jobqueue-worker` and `jobqueue-examples` (tag `dev`, stored as
`localhost/<name>:dev` in the machine's containers-storage, where the node agent finds them) from the
Dockerfiles exactly as shipped; only `--build-arg` chooses the base. The base is, in this order:
`JQ_PYTHON_IMAGE` when set (pulled if missing), the Dockerfiles' own default (`python:3.11-slim`) when it
is already in local storage, or else a stand-in built once from Debian's packages with mmdebstrap
(Python 3.11 from bookworm) and cached as a tarball outside the repository.

It also builds, for the local cluster only, stand-ins for the two images the operator names by default and
no registry serves here: `redis:7.4` (Debian's redis-server, from mmdebstrap like the base) and
`mher/flower:2.0` (Flower from PyPI on the Python base, devenv/images/flower/Dockerfile), and names them as
the kubelet would pull them (`STAND_INS`), so the operator's manifests run unchanged, from images.

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
from jobqueue_operator.build.redis import DATA_DIR, PORT, REDIS_UID
from jobqueue_operator.models import Flower, ManagedBroker

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
    stands_in: str = ""
    """The image it stands in for on the local cluster (`make images` tags it so), if any."""

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
FLOWER: Final = ImageBuild(
    "jobqueue-flower",
    "devenv/images/flower/Dockerfile",
    ".",
    "PYTHON_IMAGE",
    30,
    stands_in=str(Flower.model_fields["image"].default),
)
"""The stand-in for mher/flower:2.0 (Flower's default image): Flower from PyPI on the Python base."""
ALL_IMAGES: Final = (WORKER, OPERATOR, EXAMPLES, FLOWER)
"""Build order: the examples' image is FROM the worker image."""

MAX_NPROC: Final = 32768
"""Build steps fail with EPERM when runc sets a higher nproc limit here, even below this process's own hard limit."""

BASE_SUITE: Final = "bookworm"
"""Debian 12: Python 3.11, as the Dockerfiles' python:3.11-slim; Redis 7.0, the stand-in redis:7.4's."""
_SLIM: Final = (
    "--dpkgopt=path-exclude=/usr/share/man/*",
    "--dpkgopt=path-exclude=/usr/share/doc/*",
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "--dpkgopt=path-exclude=/usr/share/locale/*",
)
_PATH: Final = "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
STAND_IN_LABEL: Final = "dev.jobqueue.stand-in"
"""Label of our stand-ins for images no registry serves here; its value is the image stood in for."""


@dataclass(frozen=True)
class DebianImage:
    """An image whose root filesystem is Debian packages, made with mmdebstrap (no registry, no Dockerfile).

    Its name carries a hash of its recipe, so a changed recipe builds a new one; the root filesystem is
    cached as a tarball outside the repository, so a machine builds it once."""

    name: str
    packages: tuple[str, ...]
    options: tuple[str, ...]
    """mmdebstrap's options (variant, what to leave out, hooks)."""
    changes: tuple[str, ...]
    """`podman import --change` lines: the image's config."""
    expected_seconds: int
    """Cold, on 2 cores (mmdebstrap); importing the cached tarball takes seconds."""

    @property
    def reference(self) -> str:
        recipe = json.dumps([BASE_SUITE, self.packages, self.options, self.changes])
        return f"localhost/{self.name}:{BASE_SUITE}-{hashlib.sha256(recipe.encode()).hexdigest()[:12]}"


BASE: Final = DebianImage(
    "jobqueue-python-base",
    ("python3", "python3-venv", "python3-pip", "python-is-python3", "ca-certificates"),
    (
        "--variant=minbase",
        *_SLIM,
        # python:3.11-slim has no PEP 668 marker: `pip install` into the system Python works there, so here too.
        '--customize-hook=rm -f "$1"/usr/lib/python3*/EXTERNALLY-MANAGED',
    ),
    (_PATH, "ENV LANG=C.UTF-8", 'CMD ["python3"]'),
    90,
)
BASE_IMAGE: Final = BASE.reference
"""The stand-in for python:3.11-slim; its name changes with its recipe, so a changed recipe rebuilds it."""

REDIS: Final = DebianImage(
    "jobqueue-redis",
    ("redis-server",),  # and redis-tools (redis-cli, the readiness probe's), its dependency
    (
        # Only the Essential packages and redis-server's dependencies: no apt, no Python, no compiler.
        "--variant=essential",
        # Merged /usr by directory symlinks, as debootstrap does: else apt picks the usrmerge package and Perl.
        "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
        *_SLIM,
        # The official image's user, made before redis-server's postinst would make one with another uid.
        f'--essential-hook=echo "redis:x:{REDIS_UID}:" >> "$1"/etc/group && '
        f'echo "redis:x:{REDIS_UID}:{REDIS_UID}::{DATA_DIR}:/usr/sbin/nologin" >> "$1"/etc/passwd',
        f'--customize-hook=mkdir -p "$1"{DATA_DIR} && chown {REDIS_UID}:{REDIS_UID} "$1"{DATA_DIR}',
    ),
    (
        _PATH,
        f"WORKDIR {DATA_DIR}",
        f"EXPOSE {PORT}",
        'CMD ["redis-server"]',
        f"LABEL {STAND_IN_LABEL}={ManagedBroker.model_fields['image'].default}",
    ),
    25,
)
"""The stand-in for redis:7.4 (the managed broker's default image): Debian's redis-server, laid out as the
official image (user redis 999:999, which the operator's StatefulSet runs as; /data owned by it and the
working directory; no USER: root unless the Pod says otherwise, as there)."""


def qualified(image: str) -> str:
    """A reference as Docker and the kubelet normalise it: `redis:7.4` -> `docker.io/library/redis:7.4`."""
    first, _, rest = image.partition("/")
    if not rest:
        return f"docker.io/library/{image}"
    if "." in first or ":" in first or first == "localhost":
        return image
    return f"docker.io/{image}"


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


def ensure_debian(image: DebianImage, stands_for: str) -> str:
    """A Debian image of ours: from local storage, else imported from its cached tarball, else built."""
    if exists(image.reference):
        return image.reference
    tarball = _images_cache() / f"{image.reference.rsplit('/', 1)[1].replace(':', '-')}.tar"
    if not tarball.exists():
        started = time.monotonic()
        log = _log(image.name)
        say(
            f"building the stand-in for {stands_for} from Debian {BASE_SUITE} packages with mmdebstrap "
            f"(no registry serves {stands_for} here); once, about {minutes(image.expected_seconds)} on "
            f"2 cores, then cached in {tarball.parent}. Log: {log}"
        )
        partial = tarball.with_suffix(".partial")
        partial.unlink(missing_ok=True)
        args = [
            "mmdebstrap",
            "--format=tar",
            *image.options,
            f"--include={','.join(image.packages)}",
            BASE_SUITE,
            str(partial),
        ]
        _run([*args, *_apt_sources()], log, Progress(image.name), re.compile(r"^I: .*"), "mmdebstrap")
        partial.rename(tarball)
        say(f"built the root filesystem of {image.name} in {minutes(time.monotonic() - started)} -> {tarball}")
    changes = [arg for change in image.changes for arg in ("--change", change)]
    log = _log(f"{image.name}-import")
    args = ["podman", "import", *changes, str(tarball), image.reference]
    _run(args, log, Progress("import"), re.compile(r"^$"), "import")
    return image.reference


def ensure_base() -> str:
    """The stand-in Python base image (for python:3.11-slim)."""
    return ensure_debian(BASE, dockerfile_default(WORKER))


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
        *(("--label", f"{STAND_IN_LABEL}={image.stands_in}") if image.stands_in else ()),
        "-f", str(REPO / image.dockerfile), "-t", image.reference,
        str(REPO / image.context),
    ]  # fmt: skip
    _run(args, log, Progress(image.name), re.compile(r"^(\[\d+/\d+\] )?STEP \d+/\d+:.*"), f"building {image.reference}")
    say(f"built {image.reference} in {time.monotonic() - started:.0f}s ({size_mb(image.reference):.0f} MB)")


def ensure(names: Sequence[str] = ()) -> dict[str, str]:
    """Build the named images (all when empty) and what they are built FROM; returns name -> reference.
    The stand-ins among them are then tagged with the names they stand in for (`tag_stand_in`)."""
    check_tools()
    known = [b.name for b in ALL_IMAGES] + [REDIS.name]
    unknown = set(names) - set(known)
    if unknown:
        raise DevenvError(f"unknown image {sorted(unknown)[0]}", f"choose from {', '.join(known)}")
    wanted = {name for name in known if not names or name in names}
    for b in ALL_IMAGES:
        if b.name in wanted:
            wanted.update(b.needs)
    built: dict[str, str] = {}
    builds = [b for b in ALL_IMAGES if b.name in wanted]
    if builds:
        python, may_pull = python_image()
        for b in builds:
            base = python if b.base_arg == "PYTHON_IMAGE" else reference(b.needs[0])
            build(b, base, may_pull and b.base_arg == "PYTHON_IMAGE")
            built[b.name] = b.reference
    if REDIS.name in wanted:
        started = time.monotonic()
        built[REDIS.name] = ensure_debian(REDIS, stand_in_of(REDIS.reference))
        say(f"{REDIS.reference} ready in {time.monotonic() - started:.0f}s ({size_mb(REDIS.reference):.0f} MB)")
    for image in built.values():
        if image in STAND_INS:
            tag_stand_in(image)
    return built


STAND_INS: Final[Mapping[str, str]] = {
    REDIS.reference: qualified(str(ManagedBroker.model_fields["image"].default)),
    FLOWER.reference: qualified(FLOWER.stands_in),
}
"""Our image -> the image it stands in for, by the name the kubelet would pull (`docker.io/library/redis:7.4`).
The local node finds `redis:7.4` under that name, as a kind node after `kind load docker-image redis:7.4`:
the operator's manifests stay exactly what a real cluster gets."""


def stand_in_of(image: str) -> str:
    return STAND_INS[image]


def tag_stand_in(image: str) -> None:
    """Name our stand-in as the image it stands in for, unless that name is taken by an image not ours (a
    real redis:7.4, pulled or loaded by you: the local cluster then runs that one)."""
    name = stand_in_of(image)
    if exists(name) and STAND_IN_LABEL not in labels(name):
        say(f"{name} is in local storage and is not a stand-in of ours: the local cluster runs it, not {image}")
        return
    done = subprocess.run(["podman", "tag", image, name], env=tool_env(), capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise DevenvError(f"podman tag {image} {name} failed: {_last(done.stderr)}", "see `podman images`")
    say(f"{image} tagged {name}: Pods naming {name} (or its short form) run it")


def labels(image: str) -> Mapping[str, str]:
    config = inspect(image).get("Config")
    found = config.get("Labels") if isinstance(config, dict) else None
    return found if isinstance(found, dict) else {}


def missing() -> list[str]:
    """Our images that are not in local storage (the e2e tests need them: `make images`), and the names of
    the images they stand in for (the managed Redis and Flower Pods need those)."""
    ours = [b.reference for b in ALL_IMAGES if not exists(b.reference)]
    return ours + [name for name in STAND_INS.values() if not exists(name)]


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
