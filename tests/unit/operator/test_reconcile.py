"""reconcile(): observe -> decide -> converge against a typed fake of the API server (fake_kube.FakeKube).

What the real cluster shows too (tests/integration/operator), here fast and exhaustive: the order of the
writes, replicas handed to the autoscaler, causes read from Pods, draining removed queues, Events once.
"""

from __future__ import annotations

import base64
from typing import Any

from jobqueue_operator import naming, reconcile
from jobqueue_operator.reasons import Reason
from tests.unit.operator.fake_kube import FakeKube

NOW = "2030-01-01T00:00:00Z"


def _body(queues: list[dict[str, Any]] | None = None, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 1},
        "spec": {"image": "i", "app": "a:app", "queues": queues or [{"name": "q", "replicas": 1}], **spec},
    }


def _run(kube: FakeKube, body: dict[str, Any], memory: reconcile.Memory | None = None) -> reconcile.Outcome:
    return reconcile.reconcile(kube, body, memory or reconcile.Memory(), NOW)


def _conditions(kube: FakeKube) -> dict[str, dict[str, Any]]:
    return {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}


def test_a_new_jobqueue_gets_its_secret_children_status_and_events_in_that_order() -> None:
    kube = FakeKube()
    outcome = _run(kube, _body())
    writes = [c for c in kube.calls if not c.startswith(("children", "pods"))]
    assert writes[0] == "create Secret"
    assert writes[-1] == "status jobqueue-operator"
    assert {c for c in writes if c.startswith("apply")} == {
        "apply Service m-redis",
        "apply StatefulSet m-redis",
        "apply Deployment m-q-worker",
        "apply PodDisruptionBudget m-q-worker",
    }
    assert ("Normal", "Created", "Created Deployment m-q-worker") in kube.events
    assert _conditions(kube)["Ready"]["reason"] == Reason.REDIS_STARTING
    assert kube.status[naming.FIELD_MANAGER]["workers"] == "0/1"
    assert not outcome.converged  # Redis is starting: come back soon


def test_a_second_reconcile_of_an_unchanged_jobqueue_writes_nothing() -> None:
    kube, memory = FakeKube(), reconcile.Memory()
    _run(kube, _body(), memory)
    kube.calls.clear()
    kube.events.clear()
    _run(kube, _body(), memory)
    assert [c for c in kube.calls if not c.startswith(("children", "pods"))] == []
    assert kube.events == []


def _last_deployment_applied(kube: FakeKube) -> dict[str, Any]:
    return next(m for m in reversed(kube.applies) if m["kind"] == "Deployment")


def test_an_autoscaled_queue_hands_its_replicas_to_the_autoscaler_before_the_apply_leaves_them_out() -> None:
    kube = FakeKube()
    body = _body([{"name": "q", "autoscaling": {"minReplicas": 0, "maxReplicas": 4}}])
    _run(kube, body)
    assert _last_deployment_applied(kube)["spec"]["replicas"] == 0  # created with minReplicas
    kube.objects[("Deployment", "m-q-worker")]["spec"]["replicas"] = 3  # someone scaled it
    kube.calls.clear()
    body["metadata"]["generation"] = 2
    body["spec"]["queues"][0]["concurrency"] = 2  # and the spec changed: the Deployment is applied again
    _run(kube, body)
    take = kube.calls.index("scale m-q-worker 3")
    assert take < kube.calls.index("apply Deployment m-q-worker")
    assert "replicas" not in _last_deployment_applied(kube)["spec"]
    assert kube.objects[("Deployment", "m-q-worker")]["spec"]["replicas"] == 3
    kube.calls.clear()
    _run(kube, body)  # the autoscaler owns them now: nothing to take over, nothing to apply
    assert not [c for c in kube.calls if c.startswith(("scale", "apply"))]


def test_a_crash_looping_worker_is_named_with_its_last_line() -> None:
    kube = FakeKube()
    _run(kube, _body())
    kube.objects[("StatefulSet", "m-redis")]["status"] = {"readyReplicas": 1}
    kube.pods_by_selector = [
        {
            "metadata": {
                "name": "m-q-worker-abc",
                "labels": {
                    naming.JOBQUEUE_LABEL: "m",
                    naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME,
                    naming.COMPONENT_LABEL: naming.WORKER,
                    naming.QUEUE_LABEL: "q",
                },
            },
            "status": {
                "containerStatuses": [
                    {
                        "name": "worker",
                        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 10s"}},
                        "lastState": {
                            "terminated": {
                                "exitCode": 2,
                                "reason": "Error",
                                "message": "Traceback ...\nModuleNotFoundError: No module named 'media'",
                            }
                        },
                    }
                ]
            },
        }
    ]
    _run(kube, _body())
    ready = _conditions(kube)["Ready"]
    assert ready["reason"] == Reason.WORKERS_FAILING
    assert "exit code 2 (Error): ModuleNotFoundError: No module named 'media'" in ready["message"]
    assert any(e[1] == Reason.WORKERS_FAILING for e in kube.events)


def test_a_redis_statefulset_refused_by_admission_says_so() -> None:
    kube = FakeKube()
    _run(kube, _body())
    kube.refusals["m-redis"] = [{"message": 'pods "m-redis-0" is forbidden: violates PodSecurity "restricted:latest"'}]
    _run(kube, _body())
    broker = _conditions(kube)["BrokerReady"]
    assert broker["reason"] == Reason.REDIS_PODS_REFUSED
    assert "violates PodSecurity" in broker["message"]


def test_a_removed_queue_that_still_holds_tasks_keeps_its_workers_until_it_is_empty(monkeypatch: Any) -> None:
    from jobqueue_operator import broker

    kube = FakeKube()
    body = _body([{"name": "a", "replicas": 1}, {"name": "old", "replicas": 0}])
    _run(kube, body)
    url = base64.b64encode(b"redis://:p@h:6379/0").decode()
    kube.objects[("Secret", "m-redis-auth")]["data"] = {"url": url}
    held = {"old": 7}
    monkeypatch.setattr(
        broker, "read_counts", lambda url, keys, **_: {k.name: broker.QueueCounts(held[k.name], 0) for k in keys}
    )
    body["spec"]["queues"] = [{"name": "a", "replicas": 1}]
    body["metadata"]["generation"] = 2
    _run(kube, body)
    assert ("Deployment", "m-old-worker") in kube.objects
    assert ("PodDisruptionBudget", "m-old-worker") in kube.objects  # a drain of its node still goes gently
    assert ("m-old-worker", 1) in kube.scales  # at least one worker drains it
    draining = kube.status[naming.FIELD_MANAGER]["drainingQueues"]
    assert draining == [{"name": "old", "deployment": "m-old-worker", "tasks": 7}]
    assert any(e[1] == Reason.QUEUE_DRAINING and "purge" in e[2] for e in kube.events)
    held["old"] = 0
    _run(kube, body)
    assert ("Deployment", "m-old-worker") not in kube.objects
    assert ("PodDisruptionBudget", "m-old-worker") not in kube.objects
    assert ("PodDisruptionBudget", "m-a-worker") in kube.objects
    assert "drainingQueues" not in kube.status[naming.FIELD_MANAGER]


def test_a_removed_queue_named_as_celery_names_it_drains_under_its_real_name(monkeypatch: Any) -> None:
    from jobqueue_operator import broker

    kube = FakeKube()
    body = _body([{"name": "high_priority", "replicas": 1}, {"name": "video.transcode", "replicas": 0}])
    _run(kube, body)
    deployment = naming.worker_deployment("m", "video.transcode")
    live = kube.objects[("Deployment", deployment)]
    assert live["metadata"]["labels"][naming.QUEUE_LABEL] == naming.queue_slug("video.transcode")
    assert live["metadata"]["annotations"][naming.QUEUE_NAME_ANNOTATION] == "video.transcode"
    template = live["spec"]["template"]["metadata"]
    assert template["annotations"][naming.QUEUE_NAME_ANNOTATION] == "video.transcode"
    url = base64.b64encode(b"redis://:p@h:6379/0").decode()
    kube.objects[("Secret", "m-redis-auth")]["data"] = {"url": url}
    held = {"video.transcode": 3}
    read: list[str] = []

    def read_counts(url: str, keys: Any, **_: Any) -> dict[str, Any]:
        read.extend(k.name for k in keys)
        return {k.name: broker.QueueCounts(held[k.name], 0) for k in keys}

    monkeypatch.setattr(broker, "read_counts", read_counts)
    body["spec"]["queues"] = [{"name": "high_priority", "replicas": 1}]
    body["metadata"]["generation"] = 2
    _run(kube, body)
    assert read == ["video.transcode"]  # the broker is read under the real name, not the slug
    assert (deployment, 1) in kube.scales
    draining = kube.status[naming.FIELD_MANAGER]["drainingQueues"]
    assert draining == [{"name": "video.transcode", "deployment": deployment, "tasks": 3}]
    held["video.transcode"] = 0
    _run(kube, body)
    assert ("Deployment", deployment) not in kube.objects
    assert any(e[1] == Reason.QUEUE_DRAINED and "queue video.transcode " in e[2] for e in kube.events)


def test_an_unreadable_broker_keeps_a_removed_queues_workers() -> None:
    kube = FakeKube()
    body = _body([{"name": "a", "replicas": 1}, {"name": "old", "replicas": 1}])
    _run(kube, body)
    body["spec"]["queues"] = [{"name": "a", "replicas": 1}]
    _run(kube, body)  # the Secret has no URL in the fake: the broker cannot be read, the tasks unknown
    assert ("Deployment", "m-old-worker") in kube.objects


def test_a_refused_apply_is_reported_and_retried() -> None:
    kube = FakeKube(refuse_apply={("Deployment", "m-q-worker"): "Deployment m-q-worker: admission webhook says no"})
    memory = reconcile.Memory()
    outcome = _run(kube, _body(), memory)
    assert _conditions(kube)["Ready"]["reason"] == Reason.APPLY_FAILED
    assert "admission webhook says no" in _conditions(kube)["Ready"]["message"]
    assert not outcome.converged
    assert reconcile.retry_after(memory) == 2.0
    _run(kube, _body(), memory)
    assert reconcile.retry_after(memory) == 4.0


def test_a_warning_that_lasts_is_posted_once() -> None:
    kube, memory = FakeKube(refuse_apply={("Deployment", "m-q-worker"): "no"}), reconcile.Memory()
    for _ in range(3):
        _run(kube, _body(), memory)
    assert [e for e in kube.events if e[1] == Reason.APPLY_FAILED] == [("Warning", "ApplyFailed", "no")]
    assert kube.raised[Reason.APPLY_FAILED] == {"no": 3}  # one Event, its count raised by each repeat


def test_an_invalid_spec_touches_nothing_and_says_why() -> None:
    kube = FakeKube()
    body = _body([{"name": "q", "autoscaling": {"minReplicas": 5, "maxReplicas": 2}}])
    outcome = _run(kube, body)
    assert not kube.objects
    assert _conditions(kube)["Ready"]["reason"] == Reason.INVALID_SPEC
    assert "minReplicas" in _conditions(kube)["Ready"]["message"]
    assert outcome.converged  # nothing to retry until the spec changes


def test_the_pods_are_rolled_when_a_secret_they_read_changes() -> None:
    kube = FakeKube()
    kube.secrets["url"] = {"url": base64.b64encode(b"redis://a:6379/0").decode()}
    body = _body(broker={"external": {"urlSecretRef": {"name": "url", "key": "url"}}})
    outcome = _run(kube, body)
    assert ("Secret", "url") in outcome.references
    template = kube.objects[("Deployment", "m-q-worker")]["spec"]["template"]["metadata"]
    before = template["annotations"][naming.CONFIG_HASH_ANNOTATION]
    kube.secrets["url"] = {"url": base64.b64encode(b"redis://b:6379/0").decode()}
    _run(kube, body)
    after = kube.objects[("Deployment", "m-q-worker")]["spec"]["template"]["metadata"]["annotations"]
    assert after[naming.CONFIG_HASH_ANNOTATION] != before
