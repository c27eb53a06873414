"""ResultBackendReady from what the workers report next to their heartbeats (scaling.decide), and the
reconciler folding it into Ready and Degraded (reconcile.decide)."""

from __future__ import annotations

from typing import Any

from jobqueue_operator import naming, reconcile, redelivery, status
from jobqueue_operator.models import Condition, JobQueue
from jobqueue_operator.reasons import Reason
from jobqueue_operator.scaling import decide
from jobqueue_operator.scaling.decide import Seen
from tests.unit.operator.fake_kube import FakeKube

PROBLEM = "the result backend redis://localhost:6379/0 cannot be reached (ConnectionError: refused): ..."
BODY: dict[str, Any] = {
    "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
    "spec": {"image": "i", "app": "a:app", "queues": [{"name": "q", "replicas": 2}, {"name": "low", "replicas": 1}]},
}


def _worker(pod: str, queue: str = "q", problem: str = "", alive: bool = True) -> redelivery.Seen:
    return redelivery.Seen(pod, queue, pod, f"uid-{pod}", "ns", 1.0, alive, result_backend_problem=problem)


def _verdict(*workers: redelivery.Seen, error: str | None = None, previous: list[Condition] | None = None) -> Any:
    seen = Seen(JobQueue.from_body(BODY), 0.0, error=error, incarnations=workers)
    return decide.result_backend_condition(seen, previous or [])


def test_the_running_workers_reports_name_the_queue_the_pods_and_the_problem() -> None:
    verdict = _verdict(_worker("q-1", problem=PROBLEM), _worker("q-2", problem=PROBLEM), _worker("low-1", "low"))
    assert verdict == ("False", Reason.RESULT_BACKEND_UNREACHABLE, f"queue q (2 Pods (q-1, q-2)): {PROBLEM}")
    assert _verdict(_worker("q-1", problem=PROBLEM))[2] == f"queue q (Pod q-1): {PROBLEM}"


def test_workers_that_reach_their_backend_make_it_true_and_a_dead_workers_report_does_not_count() -> None:
    verdict = _verdict(_worker("q-1"), _worker("gone", problem=PROBLEM, alive=False))
    assert verdict == ("True", Reason.RESULT_BACKEND_REACHABLE, "every running worker reaches its result backend")


def test_with_no_running_worker_or_an_unread_broker_the_condition_stays_as_it_was_until_the_spec_changes() -> None:
    assert _verdict() is None  # never reported: absent
    before = Condition(
        type=status.RESULT_BACKEND_READY,
        status="False",
        reason="ResultBackendUnreachable",
        message="m",
        observed_generation=1,
    )
    assert _verdict(previous=[before]) == ("False", "ResultBackendUnreachable", "m")
    assert _verdict(_worker("q-1"), error="timeout", previous=[before]) == ("False", "ResultBackendUnreachable", "m")
    older = before.model_copy(update={"observed_generation": 0})  # set before the spec changed (a fix, maybe)
    assert _verdict(previous=[older]) is None


def test_the_reconciler_folds_an_unreachable_result_backend_into_ready_and_degraded_without_a_second_event() -> None:
    kube = FakeKube()
    body = {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        **BODY,
        "status": {
            "conditions": [
                {
                    "type": status.RESULT_BACKEND_READY,
                    "status": "False",
                    "reason": Reason.RESULT_BACKEND_UNREACHABLE,
                    "message": f"queue q (Pod q-1): {PROBLEM}",
                }
            ]
        },
    }
    reconcile.reconcile(kube, body, reconcile.Memory(), "2030-01-01T00:00:00Z")
    conditions = {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}
    assert conditions["Ready"]["status"] == "False"
    assert conditions["Ready"]["reason"] == Reason.RESULT_BACKEND_UNREACHABLE
    assert conditions["Ready"]["message"] == f"queue q (Pod q-1): {PROBLEM}"
    assert conditions["Degraded"]["status"] == "True"
    assert PROBLEM in conditions["Degraded"]["message"]
    assert status.RESULT_BACKEND_READY not in conditions  # the tick's condition: the reconciler does not write it
    assert not [event for event in kube.events if event[1] == Reason.RESULT_BACKEND_UNREACHABLE]
