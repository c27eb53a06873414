"""A typo in a JobQueue's `image` is named in its status: the image error, not what a stand-in ran.

`image: proj-wroker:dev` once ran the workers anyway (the local node agent ran the command on the host)
and the status said `ModuleNotFoundError`. Now the worker Pods wait as on any node (`ErrImageNeverPull`
with `imagePullPolicy: Never`, else `ErrImagePull`/`ImagePullBackOff`), and the operator's causes
(causes.py, `pulling`) put that, with the image, in the JobQueue's conditions and a Warning Event.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv.deployer import condition
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, apply_jobqueue, jobqueue_manifest

TYPO = "proj-wroker:dev"


@pytest.mark.parametrize(
    ("policy", "reasons"),
    [("Never", ("ErrImageNeverPull",)), ("IfNotPresent", ("ErrImagePull", "ImagePullBackOff"))],
)
def test_an_image_typo_is_named_in_the_jobqueues_conditions(
    operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
    redis_url: str,
    policy: str,
    reasons: tuple[str, ...],
) -> None:
    ns = operator_namespace
    name = f"typo-{policy.lower()}"
    core.create_namespaced_secret(ns, {"metadata": {"name": name}, "stringData": {"url": redis_url}})
    external = {"external": {"urlSecretRef": {"name": name, "key": "url"}}}  # a broker that works
    document = jobqueue_manifest(name, [{"name": "q", "replicas": 1}], broker=external)
    document["spec"].update(image=TYPO, imagePullPolicy=policy)
    apply_jobqueue(kubectl, ns, document)

    def named(kind: str) -> dict[str, Any] | None:
        body = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
        found = condition(body, kind)
        if found is None or found["status"] != ("True" if kind == "Degraded" else "False"):
            return None
        return found if any(r in found["message"] for r in reasons) and TYPO in found["message"] else None

    ready = wait_until(lambda: named("Ready"), timeout=90, what=f"{name}: Ready=False naming {reasons} and {TYPO}")
    assert ready["reason"] == "WorkersFailing"
    assert "queue q" in ready["message"]
    assert "ModuleNotFoundError" not in ready["message"]  # the workers never ran
    degraded = wait_until(lambda: named("Degraded"), timeout=30, what=f"{name}: Degraded naming the image")
    assert degraded["reason"] == "WorkersFailing"
    assert wait_until(lambda: named("WorkersAvailable"), timeout=30, what=f"{name}: WorkersAvailable naming it")

    def warned() -> bool:
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={name},type=Warning")
        return any(e.reason == "WorkersFailing" and TYPO in e.message for e in events.items)

    wait_until(warned, timeout=30, what=f"a WorkersFailing Event naming {TYPO}")
    pods = core.list_namespaced_pod(ns, label_selector=f"jobqueue.dev/jobqueue={name}").items
    assert pods
    assert all(s.restart_count == 0 for p in pods for s in p.status.container_statuses or [])  # none ran
    kubectl("delete", "jq", "-n", ns, name)
