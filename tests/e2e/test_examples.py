"""Every example under examples/ applied as it is, on its image (`jobqueue-worker:dev`, or
`jobqueue-examples:dev` for the examples' task modules), and run with short tasks: the built-in tasks and
short stand-ins for the real work."""

from __future__ import annotations

import copy
import sys
import uuid
from typing import Any

import pytest
import requests
from celery.result import AsyncResult
from prometheus_client.parser import text_string_to_metric_families

from jobqueue_devenv import demo
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer, records
from tests.e2e.conftest import EXAMPLES, Deploy, Deployed, load_example

sys.path.insert(0, str(EXAMPLES))  # the examples' task modules, for their producer-side helpers
from jobqueue_examples import background, inference, speech


def with_env(body: dict[str, Any], **env: str) -> dict[str, Any]:
    """The example with `env` set in its workers' environment."""
    body = copy.deepcopy(body)
    kept = [e for e in body["spec"].get("env", []) if e["name"] not in env]
    body["spec"]["env"] = kept + [{"name": name, "value": value} for name, value in env.items()]
    return body


def done_exactly_once(deployed: Deployed, run: str, sent: list[AsyncResult], timeout: float = 120) -> None:
    wait_until(
        lambda: producer.done_count(deployed.app, run) >= len(sent), timeout=timeout, what=f"{len(sent)} tasks done"
    )
    assert records.read(deployed.redis, run, records.DONE) == {result.id: 1 for result in sent}
    assert records.read(deployed.redis, run, records.STARTED) == {result.id: 1 for result in sent}


def worker_metrics(deployed: Deployed, kube: demo.Kube, queue: str) -> dict[tuple[str, str], float]:
    """(sample name, cause/state label) -> value, summed over the queue's worker Pods (scraped by Pod IP)."""
    pods = kube.get("pods", "-n", deployed.namespace, "-l", f"jobqueue.dev/queue={queue}")["items"]
    totals: dict[tuple[str, str], float] = {}
    for pod in pods:
        text = requests.get(f"http://{pod['status']['podIP']}:9808/metrics", timeout=5).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                key = (sample.name, sample.labels.get("cause") or sample.labels.get("state") or "")
                totals[key] = totals.get(key, 0.0) + sample.value
    return totals


def test_demo(deploy: Deploy) -> None:
    deployed = deploy(load_example("demo.yaml"))
    run = uuid.uuid4().hex
    sent = producer.send(deployed.app, "high", "noop", 30, priorities=(0, 9), run_id=run)
    sent += producer.send(deployed.app, "low", "sleep", 10, run_id=run, kwargs={"seconds": 0.01})
    done_exactly_once(deployed, run, sent)


def state_is(result: AsyncResult, wanted: str) -> bool:
    got = inference.job_state(result)
    if got != wanted:
        raise AssertionError(f"job {result.id} is {got}")
    return True


def test_ml_inference_job_states_and_retries(deploy: Deploy) -> None:
    deployed = deploy(load_example("ml-inference.yaml"))
    app = deployed.app
    assert inference.job_state(AsyncResult(str(uuid.uuid4()), app=app)) == "pending"
    # Revokes are broadcast (Redis pub/sub): only a worker already listening for control messages gets one.
    wait_until(lambda: app.control.ping(timeout=1.0), timeout=30, what="the worker answering control messages")

    blocker = inference.submit(app, "resnet", [1.0, 2.0], seconds=2.0)
    wait_until(lambda: inference.job_state(blocker) == "running", timeout=30, what="the first job running")
    waiting = inference.submit(app, "resnet", [3.0], seconds=0.1)  # one worker process, busy: it waits
    cancelled = inference.submit(app, "resnet", [4.0], seconds=0.1)
    assert (inference.job_state(waiting), inference.job_state(cancelled)) == ("queued", "queued")
    app.control.revoke(cancelled.id)
    retried = inference.submit(app, "bert", [1.0], seconds=0.1, transient_failures=2)
    hopeless = inference.submit(app, "bert", [1.0], seconds=0.1, transient_failures=10)

    assert blocker.get(timeout=60)["score"] == 1.5
    assert inference.job_state(blocker) == "completed"
    assert waiting.get(timeout=60)["score"] == 3.0
    assert retried.get(timeout=60)["attempts"] == 3  # two exponential back-offs, then success
    with pytest.raises(inference.TransientError):
        hopeless.get(timeout=60)  # 3 retries, then failed for good
    assert inference.job_state(hopeless) == "failed"
    wait_until(lambda: state_is(cancelled, "cancelled"), timeout=30, what="the revoked job cancelled")


def test_background_jobs_priorities_retries_and_dead_letters(deploy: Deploy) -> None:
    deployed = deploy(load_example("background-jobs.yaml"))
    app = deployed.app
    sent = {
        queue: [
            app.send_task(background.PROCESS, args=[f"{queue}-{i}"], queue=queue, priority=[0, 5, 9][i % 3])
            for i in range(12)
        ]
        for queue in deployed.queues()
    }
    flaky = app.send_task(background.PROCESS, args=["flaky"], kwargs={"failures": 2}, queue="default")
    poison = app.send_task(background.PROCESS, args=["poison"], kwargs={"failures": 99}, queue="critical")

    for queue, results in sent.items():
        assert [r.get(timeout=60) for r in results] == [f"{queue}-{i}" for i in range(12)]
    assert flaky.get(timeout=60) == "flaky"  # retried twice with back-off, then done
    assert background.dead_letters(deployed.redis, "default") == []
    wait_until(
        lambda: background.dead_letters(deployed.redis, "critical"), timeout=60, what="the poison job dead-lettered"
    )
    (dead,) = background.dead_letters(deployed.redis, "critical")
    assert (dead.task_id, background.arguments(dead)[0], dead.task) == (poison.id, ["poison"], background.PROCESS)
    assert "TransientError" in dead.exception
    assert dead.reason == "failed"
    assert poison.state == "FAILURE"


def test_long_evaluation_limits_and_single_delivery(deploy: Deploy, kube: demo.Kube) -> None:
    deployed = deploy(load_example("long-evaluation.yaml"))
    for queue in deployed.queues():
        deployment = kube.get("deployment", f"evaluation-{queue}-worker", "-n", deployed.namespace)
        pod = deployment["spec"]["template"]["spec"]
        env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
        hard = int(env["JOBQUEUE_TIME_LIMIT_SECONDS"])
        assert int(env["JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS"]) > hard >= 4 * 3600
        assert pod["terminationGracePeriodSeconds"] >= hard  # a warm shutdown can wait for the running task
    run = uuid.uuid4().hex
    sent = producer.send(deployed.app, "gpu", "sleep", 3, run_id=run, kwargs={"seconds": 0.5})
    sent += producer.send(deployed.app, "cpu", "sleep", 4, run_id=run, kwargs={"seconds": 0.5})
    done_exactly_once(deployed, run, sent)  # started once each: no second delivery while running


def test_image_processing_results_expire_and_children_recycle(deploy: Deploy, kube: demo.Kube) -> None:
    deployed = deploy(load_example("image-processing.yaml"))
    run = uuid.uuid4().hex
    sent = producer.send(deployed.app, "images", "burn_cpu", 40, run_id=run, kwargs={"milliseconds": 10})
    sent += producer.send(deployed.app, "images", "allocate", 8, run_id=run, kwargs={"megabytes": 20})
    done_exactly_once(deployed, run, sent)
    assert all(r.get(timeout=10) > 0 for r in sent)
    ttl = deployed.redis.ttl(f"celery-task-meta-{sent[0].id}")
    assert 0 < ttl <= 3600  # results expire after an hour

    (big,) = producer.send(deployed.app, "images", "allocate", 1, kwargs={"megabytes": 230})
    assert big.get(timeout=60) == 230 * 1024 * 1024
    wait_until(
        lambda: worker_metrics(deployed, kube, "images").get(("jobqueue_worker_child_recycles_total", "memory")),
        timeout=30,
        what="a pool child recycled for memory (max-memory-per-child 200Mi)",
    )


def test_speech_to_text_queues_beat_and_flower(deploy: Deploy, kube: demo.Kube) -> None:
    deployed = deploy(with_env(load_example("speech-to-text.yaml"), CLEANUP_EVERY_SECONDS="2"))
    app = deployed.app
    sent = {
        queue: [app.send_task(speech.TRANSCRIBE, args=[f"{queue}-{i}.wav"], queue=queue) for i in range(6)]
        for queue in ("high", "medium", "low")
    }
    for queue, results in sent.items():
        assert [r.get(timeout=60) for r in results] == [f"transcript of {queue}-{i}.wav" for i in range(6)]
    wait_until(
        lambda: len(records.read(deployed.redis, speech.CLEANUP_RUN, records.DONE)) >= 2,
        timeout=60,
        what="two cleanups sent by beat and run on the low queue",
    )

    flower = kube.get("pods", "-n", deployed.namespace, "-l", "app.kubernetes.io/component=flower")["items"]
    assert len(flower) == 1
    base = f"http://{flower[0]['status']['podIP']}:5555"
    wait_until(lambda: requests.get(f"{base}/healthcheck", timeout=5).text == "OK", timeout=60, what="Flower up")
    wait_until(
        lambda: all(f"{q}@" in requests.get(f"{base}/workers", timeout=5).text for q in ("high", "medium", "low")),
        timeout=60,
        what="Flower listing the three queues' workers",
    )


def test_scale_to_zero_wakes_on_the_first_task_and_goes_back(deploy: Deploy, kube: demo.Kube) -> None:
    deployed = deploy(load_example("scale-to-zero.yaml"))

    def workers() -> int:
        found = kube.get("deployment", "nightly-reports-reports-worker", "-n", deployed.namespace)
        return int(found["spec"].get("replicas") or 0)

    assert workers() == 0
    run = uuid.uuid4().hex
    sent = producer.send(deployed.app, "reports", "sleep", 8, run_id=run, kwargs={"seconds": 0.5})
    wait_until(lambda: workers() >= 1, timeout=30, what="woken from zero")
    done_exactly_once(deployed, run, sent)
    wait_until(lambda: workers() == 0, timeout=120, what="back to zero workers")
