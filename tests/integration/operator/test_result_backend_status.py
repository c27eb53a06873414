"""An app whose own result backend cannot be reached, on the real local cluster: the JobQueue's conditions
name the backend's URL (password masked) and the fix, Ready turns False, a Warning Event says it, and the
workers keep running (docs/worker.md, "Result backend").

The app is tests/integration/worker/diary_app.py (`backend=` a Redis nobody listens on), run by the worker
as a host process from this checkout; the broker is the managed Redis, which is where the workers report.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.operator_process import host_operator
from jobqueue_devenv.paths import REPO
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION, jobqueue_manifest

NAME = "diary"
SAID = (
    "the result backend redis://:**@127.0.0.1:1/0 cannot be reached (ConnectionError: Error 111 connecting to "
    "127.0.0.1:1. Connection refused.): tasks run but their results are not stored (dead-lettered as "
    "result-not-stored); point the app's result_backend at a Redis the workers can reach, or set the "
    "JobQueue's spec.results.backendSecretRef (it overrides the app's)"
)


@pytest.fixture(scope="module")
def service_operator(
    local_cluster: cluster.ClusterState, operator_namespace: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Path]:
    """`jobqueue-operator` on the host resolving Service names like a Pod (it reads the managed Redis, where
    the workers report); yields its log file."""
    log = tmp_path_factory.mktemp("operator") / "operator.log"
    with host_operator(local_cluster.kubeconfig, operator_namespace, log, cluster_dir=local_cluster.directory):
        yield log


def _conditions(custom: client.CustomObjectsApi, namespace: str) -> dict[str, dict[str, Any]]:
    body = custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, NAME)
    return {c["type"]: c for c in (body.get("status") or {}).get("conditions") or []}


def test_an_unreachable_result_backend_of_the_app_is_named_in_the_jobqueues_conditions(
    service_operator: Path,
    kubectl: Kubectl,
    custom: client.CustomObjectsApi,
    core: client.CoreV1Api,
    operator_namespace: str,
) -> None:
    ns = operator_namespace
    document = jobqueue_manifest(
        NAME,
        [{"name": "notes", "replicas": 1}],
        app="tests.integration.worker.diary_app:app",
        env=[{"name": "PYTHONPATH", "value": str(REPO)}],  # the app lives in this checkout's tests
    )
    kubectl("apply", "--server-side", "-n", ns, "-f", "-", input=yaml.safe_dump(document))

    def reported() -> dict[str, dict[str, Any]] | None:
        found = _conditions(custom, ns)
        backend, ready = found.get("ResultBackendReady") or {}, found.get("Ready") or {}
        return found if backend.get("status") == "False" and ready.get("reason") == "ResultBackendUnreachable" else None

    conditions = wait_until(reported, timeout=120, what="ResultBackendReady False, and Ready False for it")
    backend = conditions["ResultBackendReady"]
    assert backend["reason"] == "ResultBackendUnreachable"
    # the Pod, or the Pods (a rollout while the managed Redis' Secret appeared): each reports the same
    assert re.fullmatch(
        r"queue notes \((Pod diary-notes-worker-\S+|\d Pods \(diary-notes-worker-.+\))\): (.+)", backend["message"]
    )
    assert backend["message"].endswith(f"): {SAID}")
    assert "secret" not in backend["message"]
    assert conditions["Ready"]["status"] == "False"
    assert SAID in conditions["Ready"]["message"]
    assert conditions["Degraded"]["status"] == "True"
    assert SAID in conditions["Degraded"]["message"]

    def warned() -> bool:  # posted right after the status is written: wait for it, do not race it
        events = core.list_namespaced_event(ns, field_selector=f"involvedObject.name={NAME},type=Warning")
        return any(e.reason == "ResultBackendUnreachable" and SAID in e.message for e in events.items)

    wait_until(warned, timeout=30, what="a ResultBackendUnreachable Event")
    pods = core.list_namespaced_pod(ns, label_selector=f"jobqueue.dev/jobqueue={NAME}").items
    workers = [p for p in pods if "worker" in p.metadata.name]
    assert workers
    assert all(all(s.restart_count == 0 for s in p.status.container_statuses or []) for p in workers)  # it runs on
    kubectl("delete", "jq", "-n", ns, NAME)
