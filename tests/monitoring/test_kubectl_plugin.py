"""`kubectl jobqueue` against the live JobQueue of the monitoring scenario, run by the real kubectl (which
finds the plugin on PATH), error paths included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from jobqueue_devenv import binaries
from jobqueue_devenv.waiting import wait_until
from jobqueue_monitoring import scenario
from jobqueue_worker import contract, producer

pytestmark = pytest.mark.cluster
PLUGIN = Path(sys.executable).parent / "kubectl-jobqueue"


def kubectl_jobqueue(live: scenario.Live, *args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, KUBECONFIG=live.kube.kubeconfig, PATH=f"{PLUGIN.parent}:{os.environ['PATH']}")
    return subprocess.run(
        [str(binaries.find().kubectl), "jobqueue", *args], capture_output=True, text=True, env=env, timeout=60
    )


def test_kubectl_finds_the_plugin(live: scenario.Live) -> None:
    assert PLUGIN.is_file(), "pip install -e . puts the kubectl-jobqueue console script next to python"
    env = dict(os.environ, KUBECONFIG=live.kube.kubeconfig, PATH=f"{PLUGIN.parent}:{os.environ['PATH']}")
    listed = subprocess.run([str(binaries.find().kubectl), "plugin", "list"], capture_output=True, text=True, env=env)
    assert "kubectl-jobqueue" in listed.stdout


def test_status_shows_each_queue_its_workers_last_scaling_and_events(live: scenario.Live) -> None:
    done = kubectl_jobqueue(live, "status", scenario.JOBQUEUE, "-n", live.namespace)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"JobQueue {live.namespace}/{scenario.JOBQUEUE}: Ready=True" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.split()}
    assert {scenario.BURST_QUEUE, scenario.STEADY_QUEUE} <= set(lines)
    assert "(IdleToZero" in lines[scenario.BURST_QUEUE]  # its last decision: back to zero after the burst
    assert "0/0" in lines[scenario.BURST_QUEUE]
    assert "Events:" in out
    assert "ScaledUp" in out
    assert "ScaledDown" in out


def test_send_puts_tasks_on_the_queue_through_the_jobqueues_broker(live: scenario.Live) -> None:
    run = uuid.uuid4().hex
    done = kubectl_jobqueue(
        live, "send", scenario.JOBQUEUE, scenario.STEADY_QUEUE, "jobqueue_worker.tasks.sleep", "-n", live.namespace,
        "--arg", "seconds=0.01", "--arg", f"run_id={run}", "--count", "3", "--priority", "9",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"sent 3 jobqueue_worker.tasks.sleep to {live.namespace}/{scenario.JOBQUEUE}")
    wait_until(
        lambda: producer.done_count(live.jobqueue.app, run) == 3, timeout=60, what="the 3 tasks sent", interval=1
    )


def test_top_lists_the_jobqueue(live: scenario.Live) -> None:
    done = kubectl_jobqueue(live, "top", "-n", live.namespace, "--once")
    assert done.returncode == 0, done.stderr
    header, *rows = done.stdout.splitlines()
    assert header.split()[:3] == ["NAMESPACE", "NAME", "READY"]
    assert [row.split()[:3] for row in rows] == [[live.namespace, scenario.JOBQUEUE, "True"]]


def _one_line_error(done: subprocess.CompletedProcess[str], text: str) -> None:
    assert done.returncode == 1, done
    assert done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert text in done.stderr, done.stderr


def test_errors_are_one_line(live: scenario.Live) -> None:
    ns = live.namespace
    _one_line_error(kubectl_jobqueue(live, "status", "nope", "-n", ns), f"JobQueue {ns}/nope not found")
    _one_line_error(kubectl_jobqueue(live, "send", "nope", "q", "t", "-n", ns), f"JobQueue {ns}/nope not found")
    _one_line_error(
        kubectl_jobqueue(live, "send", scenario.JOBQUEUE, "imgaes", "t", "-n", ns),
        f"JobQueue {ns}/{scenario.JOBQUEUE} has no queue imgaes (its queues: burst, steady)",
    )
    _one_line_error(
        kubectl_jobqueue(
            live, "send", scenario.JOBQUEUE, "steady", "t", "-n", ns, "--broker-url", "redis://127.0.0.1:9/0"
        ),
        "cannot reach the broker at redis://127.0.0.1:9",
    )
    _one_line_error(kubectl_jobqueue(live, "send", scenario.JOBQUEUE, "steady", "t", "-n", ns, "--count", "0"),
                    "--count must be at least 1")  # fmt: skip


def test_a_broker_whose_secret_is_missing_is_a_one_line_error(live: scenario.Live) -> None:
    body = {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": "nobroker"},
        "spec": {
            "image": "jobqueue-worker:dev",
            "app": "jobqueue_worker.demo:app",
            "broker": {"external": {"urlSecretRef": {"name": "missing-secret", "key": "url"}}},
            "queues": [{"name": "q", "replicas": 0, "autoscaling": {"enabled": False}}],
        },
    }
    live.kube.kubectl("apply", "-n", live.namespace, "-f", "-", input=json.dumps(body))
    try:
        _one_line_error(
            kubectl_jobqueue(live, "send", "nobroker", "q", "t", "-n", live.namespace),
            f"Secret {live.namespace}/missing-secret not found",
        )
    finally:
        live.kube.kubectl("delete", "jobqueue", "nobroker", "-n", live.namespace, "--wait=false")


def test_bash_completion(live: scenario.Live) -> None:
    done = kubectl_jobqueue(live, "completion", "bash")
    assert done.returncode == 0
    assert "complete -F _kubectl_jobqueue kubectl-jobqueue" in done.stdout
    checked = subprocess.run(["bash", "-n"], input=done.stdout, capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr


def test_deadletters_lists_and_purges_through_the_broker_at_zero_workers(live: scenario.Live) -> None:
    """The DeadLetters Event names this command: it reads the broker from outside, so it needs no worker
    (a queue whose tasks all failed is typically at zero). A queue the spec does not list (its dead letters
    outlive it) keeps the operator's counts and Events of the live JobQueue out of it."""
    queue = f"retired-{uuid.uuid4().hex[:6]}"
    letter = contract.DeadLetter(
        reason=contract.DeadLetterReason.FAILED,
        message={"headers": {"task": "media.thumbnail", "id": "t-1"}, "body": "", "properties": {}},
        queue=queue,
        exception="OSError: disk full",
        task="media.thumbnail",
        task_id="t-1",
    )
    live.jobqueue.redis.lpush(contract.dead_letter_key(queue), letter.to_json())
    ns, name = live.namespace, scenario.JOBQUEUE
    listed = kubectl_jobqueue(live, "deadletters", name, queue, "-n", ns)
    assert listed.returncode == 0, listed.stderr
    assert letter.id in listed.stdout
    assert "OSError: disk full" in listed.stdout
    assert f"1 of 1 dead letters of {queue}" in listed.stdout
    refused = kubectl_jobqueue(live, "deadletters", name, queue, "purge", "-n", ns)
    _one_line_error(refused, "purge needs exactly one of")
    purged = kubectl_jobqueue(live, "deadletters", name, queue, "purge", "--id", letter.id, "-n", ns)
    assert purged.returncode == 0, purged.stderr
    assert f"1 dead letters of {queue} purged" in purged.stdout
    assert live.jobqueue.redis.llen(contract.dead_letter_key(queue)) == 0
