"""Issue 5 end to end: a JobQueue with two queues of the built-in tasks on a managed Redis; 1,000 tasks
across both queues and Celery priorities, each done exactly once with its result; failures and retries."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import requests
import yaml
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import demo
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer, records
from tests.e2e.conftest import Deploy, Deployed

MANIFEST: dict[str, Any] = {
    "apiVersion": demo.GROUP_VERSION,
    "kind": "JobQueue",
    "metadata": {"name": "twoq"},
    "spec": {
        "image": "jobqueue-worker:dev",
        "app": "jobqueue_worker.demo:app",
        "queues": [
            {"name": "high", "concurrency": 2, "replicas": 1, "autoscaling": {"enabled": False}},
            {"name": "low", "concurrency": 1, "replicas": 1, "autoscaling": {"enabled": False}},
            {"name": "parked", "concurrency": 1, "replicas": 0, "autoscaling": {"enabled": False}},  # no workers yet
        ],
    },
}


@pytest.fixture(scope="module")
def twoq(deploy_module: Deploy) -> Deployed:
    return deploy_module(MANIFEST)


def test_a_thousand_tasks_across_queues_and_priorities_complete_exactly_once(twoq: Deployed) -> None:
    run = uuid.uuid4().hex
    high = producer.send(twoq.app, "high", "noop", 600, priorities=(0, 3, 6, 9), run_id=run)
    low = producer.send(twoq.app, "low", "sleep", 400, priorities=(9, 0, 6), run_id=run, kwargs={"seconds": 0.001})
    backlog = demo.depths(twoq.redis, ["high", "low"])
    assert sum(d.ready + d.in_flight for d in backlog.values()) > 0  # 1,000 sent in about a second: not all done

    sent = high + low
    wait_until(
        lambda: producer.done_count(twoq.app, run) == len(sent),
        timeout=240,
        what=f"1,000 tasks done (so far {producer.done_count(twoq.app, run)})",
        interval=1,
    )
    assert records.read(twoq.redis, run, records.DONE) == {result.id: 1 for result in sent}
    assert records.read(twoq.redis, run, records.STARTED) == {result.id: 1 for result in sent}
    assert [result.get(timeout=10) for result in low] == [0.001] * len(low)
    # A task records itself done before Celery stores its result: wait for the results, then check them all.
    wait_until(lambda: all(result.ready() for result in sent), timeout=30, what="every result stored")
    assert {result.state for result in sent} == {"SUCCESS"}

    # The backlog drained: nothing waiting in any priority list, nothing delivered and unacknowledged.
    wait_until(
        lambda: all(d == demo.Depth(0, 0) for d in demo.depths(twoq.redis, ["high", "low"]).values()),
        timeout=30,
        what="empty queues",
    )


def test_a_failing_task_is_reported_failed_and_a_flaky_one_succeeds_after_its_retries(twoq: Deployed) -> None:
    run = uuid.uuid4().hex
    (failing,) = producer.send(twoq.app, "high", "fail", 1, run_id=run, kwargs={"message": "boom"})
    (flaky,) = producer.send(
        twoq.app, "low", "flaky", 1, run_id=run, kwargs={"failures": 2, "backoff_seconds": 0.2}, priorities=(9,)
    )
    with pytest.raises(Exception, match="boom") as caught:
        failing.get(timeout=60)
    assert type(caught.value).__name__ == "DemoTaskError"
    assert failing.state == "FAILURE"
    assert flaky.get(timeout=60) == 3  # succeeded on its third attempt, after two back-offs
    assert flaky.state == "SUCCESS"
    assert records.read(twoq.redis, run, records.STARTED) == {failing.id: 1, flaky.id: 3}
    assert records.read(twoq.redis, run, records.DONE) == {flaky.id: 1}


def queue_status(twoq: Deployed, kube: demo.Kube, queue: str) -> dict[str, Any]:
    status = kube.get("jobqueue", twoq.name, "-n", twoq.namespace).get("status") or {}
    (found,) = [q for q in status.get("queues") or [] if q["name"] == queue]
    return dict(found)


def operator_depth(running: demo.RunningOperator, twoq: Deployed, queue: str) -> dict[str, float]:
    """jobqueue_queue_depth of one queue by state, from the operator's /metrics."""
    wanted = {"namespace": twoq.namespace, "jobqueue": twoq.name, "queue": queue}
    text = requests.get(running.metrics_url, timeout=5).text
    return {
        sample.labels["state"]: sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "jobqueue_queue_depth" and wanted.items() <= sample.labels.items()
    }


def test_the_operator_reports_the_backlog_and_its_draining(
    twoq: Deployed, kube: demo.Kube, jq_operator: demo.RunningOperator
) -> None:
    run = uuid.uuid4().hex
    sent = producer.send(twoq.app, "parked", "noop", 50, priorities=(0, 9), run_id=run)

    def reports(ready: int) -> bool:
        status, metric = queue_status(twoq, kube, "parked"), operator_depth(jq_operator, twoq, "parked")
        if (status.get("ready"), status.get("inFlight"), metric) != (ready, 0, {"ready": ready, "in_flight": 0}):
            raise AssertionError(f"status {status}, metric {metric}")
        return True

    wait_until(lambda: reports(50), timeout=60, what="status and metrics showing 50 waiting on the parked queue")
    parked = {"name": "parked", "concurrency": 1, "replicas": 1, "autoscaling": {"enabled": False}}
    body = {**MANIFEST, "spec": {**MANIFEST["spec"], "queues": [*MANIFEST["spec"]["queues"][:2], parked]}}
    kube.kubectl("apply", "--server-side", "-n", twoq.namespace, "-f", "-", input=yaml.safe_dump(body))
    wait_until(lambda: reports(0), timeout=120, what="status and metrics showing the parked queue drained")
    # A message the worker has just popped is in no list and not yet in unacked, so a tick can report the queue
    # drained a moment before the last task has run: wait for its record rather than race it.
    wait_until(lambda: producer.done_count(twoq.app, run) >= len(sent), timeout=30, what="all 50 done")
    assert records.read(twoq.redis, run, records.DONE) == {result.id: 1 for result in sent}
