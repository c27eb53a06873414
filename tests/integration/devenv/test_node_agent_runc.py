"""The node agent's runtime (nodeagent/runc.py) against real runc: a container stopped the moment its run
was spawned, before runc has created it (a Pod deleted while it starts), still gets its SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobqueue_devenv import images
from jobqueue_devenv.nodeagent import oci, runc
from jobqueue_devenv.nodeagent.imagestore import Image, ImageStore

GRACE_SECONDS = 20
"""Long enough that a SIGTERM never delivered shows as the SIGKILL at the grace's end (exit 137)."""


@pytest.fixture
def worker_image() -> Image:
    found = ImageStore().lookup(images.WORKER.reference)
    if found is None:
        pytest.fail(f"{images.WORKER.reference} is not built: run `make images`")
    return found


@pytest.fixture
def netns() -> Iterator[str]:
    name = f"jqtest-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=False)


def test_a_container_stopped_as_soon_as_its_run_is_spawned_gets_sigterm_not_the_kill_at_the_grace_end(
    worker_image: Image, netns: str, tmp_path: Path
) -> None:
    parent = f"jobqueue-test-{uuid.uuid4().hex[:6]}"
    container_id = f"early-{uuid.uuid4().hex[:6]}"
    config = oci.runtime_config(
        # dumb-init passes the SIGTERM on to `sleep` (which, as PID 1, would ignore it): 128 + 15 when it came.
        process_args=["dumb-init", "--single-child", "--", "sleep", "600"],
        env={"PATH": f"/opt/jobqueue/bin:{oci.DEFAULT_PATH}"},
        cwd="/",
        user=oci.Account(10001, 10001, "/app"),
        context={},
        supplemental_groups=[],
        hostname="early",
        netns_path=f"/run/netns/{netns}",
        mounts=[],
        memory_limit=None,
        cgroups_path=f"/{parent}/{container_id}",
    )
    root = tmp_path / "runc"
    started = runc.RuncContainer(
        container_id, tmp_path / "bundle", config, worker_image.layers, tmp_path / "run.log", root, {}
    )
    try:
        code = started.stop(GRACE_SECONDS)  # at once: runc has not created the container yet
    finally:
        runc.delete_all(root)
        runc.remove_cgroup_parent(parent)
    assert code == 128 + signal.SIGTERM, (tmp_path / "run.log").read_text()[-2000:]
