"""A user's own image, built the way docs/worker.md says (issue 19, point 8): FROM the worker image, COPY,
`RUN pip install -r requirements.txt` as the image's own user, with `python -m jobqueue_devenv build`
(what `make user-image` runs). The worker image ships its constraints (PIP_CONSTRAINT), so a requirement
that would replace the worker's Celery fails the build with pip's words instead of a crash loop at run time.

Needs the worker image (`make images`) and the package index (the conflict is resolved against it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from jobqueue_devenv import images
from jobqueue_devenv.paths import REPO

CONSTRAINTS = "/opt/jobqueue/constraints.txt"
DOCKERFILE = f"FROM {images.WORKER.reference}\nCOPY --chown=10001:10001 . /app/\nRUN pip install -r requirements.txt\n"
CHECKS = (  # run in the build, so the build output shows what the image holds
    'RUN echo "constraint file: $PIP_CONSTRAINT" && grep -E \'^(celery|kombu|redis)==\' "$PIP_CONSTRAINT"\n'
    'RUN python -c "import celery, kombu, redis, tinydep; '
    "print('installed:', f'celery=={celery.__version__}', f'kombu=={kombu.__version__}', "
    "f'redis=={redis.__version__}', tinydep.WHO)\"\n"
)


@pytest.fixture(scope="module", autouse=True)
def worker_image() -> None:
    if not images.exists(images.WORKER.reference):
        pytest.fail(f"{images.WORKER.reference} is not built: run `make images`")


def _build(context: Path, tag: str) -> subprocess.CompletedProcess[str]:
    """`python -m jobqueue_devenv build -t TAG CONTEXT`, its whole output (buildah's and pip's) kept."""
    command = [sys.executable, "-m", "jobqueue_devenv", "build", "-t", tag, str(context)]
    env = dict(os.environ, PYTHONPATH=str(REPO / "devenv"))
    return subprocess.run(command, capture_output=True, text=True, timeout=600, check=False, env=env)


def _wheel(folder: Path) -> str:
    """A tiny local wheel (no index needed): proof that the user's own packages install as USER 10001."""
    name = "tinydep-1.0-py3-none-any.whl"
    files = {
        "tinydep/__init__.py": "WHO = 'tinydep installed'\n",
        "tinydep-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: tinydep\nVersion: 1.0\n",
        "tinydep-1.0.dist-info/WHEEL": "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    with zipfile.ZipFile(folder / name, "w") as wheel:
        for path, text in files.items():
            wheel.writestr(path, text)
            digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
            record.append(f"{path},sha256={digest},{len(text.encode())}")
        wheel.writestr("tinydep-1.0.dist-info/RECORD", "\n".join([*record, "tinydep-1.0.dist-info/RECORD,,"]) + "\n")
    return name


def test_the_worker_image_names_its_constraints_in_pip_constraint() -> None:
    config = images.inspect(images.WORKER.reference).get("Config")
    assert isinstance(config, dict)
    assert f"PIP_CONSTRAINT={CONSTRAINTS}" in config.get("Env", []), config.get("Env")


def test_a_users_requirements_install_as_the_worker_user_and_keep_the_workers_versions(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    (tmp_path / "requirements.txt").write_text(f"celery>=5.4\nredis\n./{wheel}\n")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE + CHECKS)
    done = _build(tmp_path, "localhost/jobqueue-test-userapp:dev")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-3000:]
    assert f"constraint file: {CONSTRAINTS}" in output
    pins = {line.strip() for line in output.splitlines() if line.strip().startswith(("celery==", "kombu==", "redis=="))}
    assert {p.split("==")[0] for p in pins} == {"celery", "kombu", "redis"}, output[-3000:]
    installed = next(line for line in output.splitlines() if line.startswith("installed:"))
    assert set(installed.split()[1:4]) == pins, (installed, pins)  # the user's pip install changed none of them
    assert "tinydep installed" in installed


def test_a_requirement_that_conflicts_with_the_workers_celery_fails_the_build_naming_both(tmp_path: Path) -> None:
    (tmp_path / "requirements.txt").write_text("celery==5.3.6\n")
    (tmp_path / "Dockerfile").write_text(DOCKERFILE)
    done = _build(tmp_path, "localhost/jobqueue-test-userpin:dev")
    output = done.stdout + done.stderr
    assert done.returncode == 2, output[-3000:]
    assert "celery==5.3.6" in output
    assert "conflict" in output.lower(), output[-3000:]  # pip: "... have conflicting dependencies"
    assert "(constraint) celery==" in output, output[-3000:]  # pip names the worker's pin too
    assert "building localhost/jobqueue-test-userpin:dev failed" in output  # and the command says which build
