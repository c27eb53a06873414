"""The node agent reports Pod status as the kubelet does: phase, Ready, container states."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_devenv.nodeagent.status import (
    ContainerView,
    Terminated,
    exit_code_of,
    phase,
    pod_status,
    termination_reason,
)

ENDED_OK = Terminated(exit_code=0, reason="Completed", started_at="t0", finished_at="t1")
ENDED_BAD = Terminated(exit_code=3, reason="Error", started_at="t0", finished_at="t1")


def _pod(policy: str = "Always", conditions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"restartPolicy": policy, "containers": [{"name": "a", "image": "img:1"}, {"name": "b"}]},
        "status": {"conditions": conditions or []},
    }


@pytest.mark.parametrize(
    ("views", "policy", "expected"),
    [
        ([ContainerView("a", "waiting", reason="ContainerCreating")], "Always", "Pending"),
        ([ContainerView("a", "running"), ContainerView("b", "waiting")], "Always", "Pending"),
        ([ContainerView("a", "running")], "Always", "Running"),
        ([ContainerView("a", "waiting", reason="CrashLoopBackOff", last_terminated=ENDED_BAD)], "Always", "Running"),
        ([ContainerView("a", "terminated", terminated=ENDED_OK)], "Never", "Succeeded"),
        ([ContainerView("a", "terminated", terminated=ENDED_BAD)], "Never", "Failed"),
        ([ContainerView("a", "terminated", terminated=ENDED_OK)], "OnFailure", "Succeeded"),
        (
            [ContainerView("a", "terminated", terminated=ENDED_OK), ContainerView("b", "running")],
            "Never",
            "Running",
        ),
    ],
)
def test_phase(views: list[ContainerView], policy: str, expected: str) -> None:
    assert phase(views, policy) == expected


def test_exit_codes_and_reasons() -> None:
    assert exit_code_of(-9) == 137
    assert exit_code_of(-15) == 143
    assert exit_code_of(2) == 2
    assert termination_reason(137, oom_killed=True) == "OOMKilled"
    assert termination_reason(0, oom_killed=False) == "Completed"
    assert termination_reason(1, oom_killed=False) == "Error"


def test_ready_pod_status() -> None:
    views = [ContainerView("a", "running", ready=True, started_at="t5"), ContainerView("b", "running", ready=True)]
    status = pod_status(_pod(), views, "10.213.0.9", "127.0.0.1", "t0", "t9")
    assert status["phase"] == "Running"
    assert status["podIP"] == "10.213.0.9"
    assert status["podIPs"] == [{"ip": "10.213.0.9"}]
    conditions = {c["type"]: c["status"] for c in status["conditions"]}
    assert conditions["Ready"] == conditions["ContainersReady"] == "True"
    first = status["containerStatuses"][0]
    assert first["state"] == {"running": {"startedAt": "t5"}}
    assert first["image"] == "img:1"
    assert first["ready"] is True


def test_unready_container_is_named_and_transition_time_is_kept() -> None:
    before = [{"type": "Ready", "status": "False", "lastTransitionTime": "t1"}]
    views = [
        ContainerView("a", "running", ready=True),
        ContainerView("b", "waiting", reason="CrashLoopBackOff", restart_count=2, last_terminated=ENDED_BAD),
    ]
    status = pod_status(_pod(conditions=before), views, "10.213.0.9", "127.0.0.1", "t0", "t9")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert ready["status"] == "False"
    assert ready["lastTransitionTime"] == "t1"
    assert ready["message"] == "containers with unready status: [b]"
    crashed = status["containerStatuses"][1]
    assert crashed["state"] == {"waiting": {"reason": "CrashLoopBackOff"}}
    assert crashed["lastState"]["terminated"]["exitCode"] == 3
    assert crashed["restartCount"] == 2


def test_completed_pod_is_not_ready() -> None:
    views = [ContainerView("a", "terminated", terminated=ENDED_OK, ready=False)]
    status = pod_status(_pod("Never"), views, "10.213.0.9", "127.0.0.1", "t0", "t9")
    ready = next(c for c in status["conditions"] if c["type"] == "Ready")
    assert (status["phase"], ready["status"], ready["reason"]) == ("Succeeded", "False", "PodCompleted")
    assert status["containerStatuses"][0]["state"]["terminated"]["reason"] == "Completed"
