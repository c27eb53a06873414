"""The images are what the docs promise: numeric non-root users, entrypoints, the operator on a read-only
root, the worker doing a warm shutdown on the kubelet's SIGTERM and ending on one that comes while it
starts, and a worker image extended by a user as docs/worker.md shows, run through a JobQueue."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest

from jobqueue_devenv import demo, images
from jobqueue_devenv.deployer import namespace_for
from jobqueue_devenv.nodeagent.imagestore import ImageStore
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer, records
from jobqueue_worker.contract import WORKER_COMMAND
from tests.e2e.conftest import PREFIX, Deploy

OPERATOR, WORKER, EXAMPLES = images.OPERATOR.reference, images.WORKER.reference, images.EXAMPLES.reference
MEDIA_IMAGE = "localhost/jobqueue-test-media:dev"


def config(image: str) -> dict[str, Any]:
    found: dict[str, Any] = dict(images.inspect(image)["Config"])  # type: ignore[arg-type]
    return found


def in_any_layer(image: str, path: str) -> bool:
    found = ImageStore().lookup(image)
    assert found is not None
    return any((Path(layer) / path.lstrip("/")).exists() for layer in found.layers)


def test_the_images_run_as_numeric_non_root_users_with_the_documented_entrypoints() -> None:
    worker, operator, examples = config(WORKER), config(OPERATOR), config(EXAMPLES)
    assert (worker["User"], worker["Entrypoint"], worker.get("Cmd")) == ("10001", list(WORKER_COMMAND), None)
    assert worker["WorkingDir"] == "/app"
    assert "PYTHONPATH=/app" in worker["Env"]
    assert operator["User"] == "65532:65532"
    assert operator["Entrypoint"] == ["jobqueue-operator"]
    assert operator["Cmd"] == ["--all-namespaces", "--liveness=http://0.0.0.0:8080/healthz"]
    assert examples["User"] == "10001"
    assert in_any_layer(EXAMPLES, "/app/jobqueue_examples/background.py")
    assert not in_any_layer(OPERATOR, "/opt/venv/bin/pip")  # nothing installs packages at run time


def test_the_operator_runs_from_its_image_on_a_read_only_root(
    kube: demo.Kube, jq_operator: demo.RunningOperator
) -> None:
    pod = kube.get("pod", jq_operator.pod, "-n", jq_operator.namespace)
    container = pod["spec"]["containers"][0]
    assert "command" not in container  # the image's entrypoint
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    status = pod["status"]["containerStatuses"][0]
    assert status["containerID"].startswith("runc://")
    assert status["imageID"].startswith("sha256:")
    assert status["restartCount"] == 0


def worker_manifest(name: str, image: str, app: str) -> dict[str, Any]:
    return {
        "apiVersion": demo.GROUP_VERSION,
        "kind": "JobQueue",
        "metadata": {"name": name},
        "spec": {
            "image": image,
            "app": app,
            "queues": [{"name": "work", "concurrency": 1, "replicas": 1, "autoscaling": {"enabled": False}}],
        },
    }


def test_the_worker_is_pid_1_and_finishes_its_task_on_the_kubelets_sigterm(deploy: Deploy, kube: demo.Kube) -> None:
    deployed = deploy(worker_manifest("warm", "jobqueue-worker:dev", "jobqueue_worker.demo:app"))
    selector = "app.kubernetes.io/component=worker"
    (pod,) = kube.get("pods", "-n", deployed.namespace, "-l", selector)["items"]
    assert pod["status"]["containerStatuses"][0]["containerID"].startswith("runc://")
    run = uuid.uuid4().hex
    (task,) = producer.send(deployed.app, "work", "sleep", 1, run_id=run, kwargs={"seconds": 4})
    wait_until(lambda: records.read(deployed.redis, run, records.STARTED), timeout=60, what="the task started")

    kube.kubectl("delete", "pod", pod["metadata"]["name"], "-n", deployed.namespace, "--wait=false")
    assert task.get(timeout=90) == 4  # finished by the worker that got SIGTERM, not redelivered
    assert records.read(deployed.redis, run, records.STARTED) == {task.id: 1}
    wait_until(
        lambda: "Warm shutdown" in demo.pod_log(kube, pod, "worker"), timeout=60, what="the warm shutdown logged"
    )


SLOW_START = "import time\ntime.sleep(600)\n"
"""A sitecustomize that holds the interpreter's start (before any code of the worker runs) for long enough."""


def slow_starting_worker(name: str) -> dict[str, Any]:
    """The worker image with the operator's command and a grace period of 300 s, held in the interpreter's
    start by a sitecustomize: a SIGTERM now comes before Python could have a handler for it."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {
            "terminationGracePeriodSeconds": 300,
            "containers": [
                {
                    "name": "worker",
                    "image": WORKER,
                    "imagePullPolicy": "Never",
                    "command": list(WORKER_COMMAND),
                    "env": [{"name": "PYTHONPATH", "value": "/slow"}],
                    "volumeMounts": [{"name": "slow", "mountPath": "/slow"}],
                }
            ],
            "volumes": [{"name": "slow", "configMap": {"name": name}}],
        },
    }


def test_a_worker_pod_deleted_while_its_worker_starts_ends_at_once_not_after_its_grace_period(
    kube: demo.Kube, request: pytest.FixtureRequest
) -> None:
    """The kubelet stops a container deleted during its start right after starting it; a PID 1 without a
    handler drops the signal (the worker ran on for its whole grace period, and took tasks). dumb-init, the
    command's PID 1, passes it to the worker, whose default action ends it."""
    with namespace_for(kube, PREFIX, request.node.name) as namespace:
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "early"},
                      "data": {"sitecustomize.py": SLOW_START}}  # fmt: skip
        for manifest in (config_map, slow_starting_worker("early")):
            kube.kubectl("apply", "-n", namespace, "-f", "-", input=json.dumps(manifest))
        wait_until(
            lambda: "running" in (kube.get("pod", "early", "-n", namespace)["status"].get("containerStatuses")
                                  or [{"state": {}}])[0]["state"],
            timeout=120, what="the worker container running",
        )  # fmt: skip
        kube.kubectl("delete", "pod", "early", "-n", namespace, "--wait=false")
        wait_until(
            lambda: not kube.get("pods", "-n", namespace, "--field-selector", "metadata.name=early")["items"],
            timeout=120,  # well within the 300 s grace period a dropped SIGTERM would wait out
            what="the Pod gone",
        )


MEDIA_CELERY = """from celery import Celery

import jobqueue_worker.sent_time  # noqa: F401

app = Celery("media", include=["media.tasks"])
app.conf.task_track_started = True
"""
MEDIA_TASKS = """from media.celery import app


@app.task(autoretry_for=(IOError,), retry_backoff=True, max_retries=3)
def thumbnail(path: str) -> str:
    return path.rsplit(".", 1)[0] + ".thumb.jpg"
"""


@pytest.fixture(scope="module")
def media_image(tmp_path_factory: pytest.TempPathFactory) -> str:
    """docs/worker.md's image: FROM the worker image, the app's folder copied to /app, its requirements
    installed as the image's own user (no USER root), the worker's constraints kept."""
    context = tmp_path_factory.mktemp("media")
    (context / "media").mkdir()
    (context / "media" / "__init__.py").write_text("")
    (context / "media" / "celery.py").write_text(MEDIA_CELERY)
    (context / "media" / "tasks.py").write_text(MEDIA_TASKS)
    (context / "requirements.txt").write_text("celery>=5.4\nredis\n")
    dockerfile = f"FROM {WORKER}\nCOPY --chown=10001:10001 . /app/\nRUN pip install -r requirements.txt\n"
    return images.build_derived(MEDIA_IMAGE, dockerfile, context)


def test_a_worker_image_extended_as_the_docs_show_runs_its_tasks_through_a_jobqueue(
    deploy: Deploy, media_image: str
) -> None:
    deployed = deploy(worker_manifest("media", "jobqueue-test-media:dev", "media.celery:app"))
    result = deployed.app.send_task("media.tasks.thumbnail", args=["/in/cat.png"], queue="work")
    assert result.get(timeout=60) == "/in/cat.thumb.jpg"
