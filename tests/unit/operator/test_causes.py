"""causes.py: the words a failure is reported in (events.py: test_events.py)."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import causes


def _pod(waiting: dict[str, Any], last: dict[str, Any] | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"name": "worker", "state": {"waiting": waiting}}
    if last is not None:
        status["lastState"] = {"terminated": last}
    return {"metadata": {"name": "p"}, "status": {"containerStatuses": [status]}}


@pytest.mark.parametrize(
    ("pod", "kind", "words"),
    [
        (
            _pod({"reason": "CrashLoopBackOff"}, {"exitCode": 2, "message": "a\nValueError: x\n"}),
            "failing",
            "ValueError: x",
        ),
        (_pod({"reason": "CrashLoopBackOff"}, {"exitCode": 137, "reason": "OOMKilled"}), "failing", "137 (OOMKilled)"),
        (_pod({"reason": "ErrImagePull", "message": "not found: w:9"}), "pulling", "not found: w:9"),
        (_pod({"reason": "CreateContainerConfigError", "message": 'secret "s" not found'}), "failing", 'secret "s"'),
    ],
)
def test_a_pod_that_cannot_run_says_why(pod: dict[str, Any], kind: str, words: str) -> None:
    cause = causes.pod(pod)
    assert cause is not None
    assert cause.kind == kind
    assert words in cause.message
    assert cause.message.startswith("Pod p container worker:")


def test_a_pod_starting_or_running_has_no_cause() -> None:
    assert causes.pod(_pod({"reason": "ContainerCreating"})) is None
    assert causes.pod({"metadata": {"name": "p"}, "status": {}}) is None


def test_a_replica_failure_is_a_refusal_with_the_api_servers_words() -> None:
    deployment = {
        "status": {"conditions": [{"type": "ReplicaFailure", "status": "True", "message": "exceeded quota: q"}]}
    }
    assert causes.deployment(deployment) == causes.Cause("refused", "exceeded quota: q")
    assert causes.failed_create([{"message": "old"}, {"message": "violates PodSecurity"}]) == causes.Cause(
        "refused", "violates PodSecurity"
    )
    assert causes.first([causes.Cause("pulling", "a"), None, causes.Cause("refused", "b")]) == causes.Cause(
        "refused", "b"
    )
