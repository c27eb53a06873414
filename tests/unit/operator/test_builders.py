"""Every builder against a golden file, plus the derived worker settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from jobqueue_operator import naming
from jobqueue_operator.build import beat, children, flower, redis, workers
from jobqueue_operator.models import JobQueue, Queue
from tests.unit.operator.conftest import Golden, samples, schema
from tests.unit.operator.test_crd import _defaulted


def _sample(stem: str) -> JobQueue:
    path = next(p for p in samples() if p.stem == stem)
    document: dict[str, Any] = _defaulted(schema(), yaml.safe_load(path.read_text()))
    document["metadata"].update(namespace="apps", uid="0000-uid", generation=1)
    return JobQueue.from_body(document)


@pytest.mark.parametrize("stem", [p.stem for p in samples()])
def test_children_of_each_sample(stem: str, golden: Golden) -> None:
    golden(f"children-{stem}", children.desired(_sample(stem)))


def test_redis_secret(golden: Golden) -> None:
    golden("redis-secret", redis.secret(_sample("media"), "not-a-real-password"))


def test_redis_without_persistence_uses_an_empty_dir_and_no_aof() -> None:
    statefulset = redis.statefulset(_sample("scheduled"))
    assert "volumeClaimTemplates" not in statefulset["spec"]
    assert statefulset["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    args = statefulset["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendonly") + 1] == "no"
    assert "--dir" not in args


def test_redis_with_persistence_keeps_the_claim_unless_asked() -> None:
    jq = _sample("media")
    spec = redis.statefulset(jq)["spec"]
    assert spec["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Retain"
    args = spec["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--appendfsync") + 1] == "everysec"
    assert args[args.index("--maxmemory-policy") + 1] == "noeviction"
    managed = jq.spec.broker.managed
    assert managed is not None
    deleting = jq.model_copy(
        update={
            "spec": jq.spec.model_copy(
                update={
                    "broker": jq.spec.broker.model_copy(
                        update={
                            "managed": managed.model_copy(
                                update={"persistence": managed.persistence.model_copy(update={"keep_on_delete": False})}
                            )
                        }
                    )
                }
            )
        }
    )
    assert redis.statefulset(deleting)["spec"]["persistentVolumeClaimRetentionPolicy"]["whenDeleted"] == "Delete"


def test_external_broker_creates_no_redis_and_reads_the_users_secret() -> None:
    objects = children.desired(_sample("external-broker"))
    assert {o["kind"] for o in objects} == {"Deployment", "PodDisruptionBudget"}
    env = objects[0]["spec"]["template"]["spec"]["containers"][0]["env"]
    assert env[0] == {"name": "JOBQUEUE_BROKER_URL", "valueFrom": {"secretKeyRef": {"name": "redis-url", "key": "url"}}}


def test_beat_is_a_singleton_and_flower_has_a_service(golden: Golden) -> None:
    jq = _sample("scheduled")
    deployment = beat.deployment(jq)
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"] == {"type": "Recreate"}
    golden("beat", deployment)
    golden("flower", [flower.deployment(jq), flower.service(jq)])


def _env(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "<ref>") for e in container["env"]}


def test_worker_follows_the_contract() -> None:
    jq = _sample("media")
    deployment = workers.deployment(jq, jq.spec.queues[0])
    contract = (Path(__file__).resolve().parents[3] / "docs" / "worker-contract.md").read_text()
    documented = {line.split("`")[1] for line in contract.splitlines() if line.startswith("| `JOBQUEUE_")}
    env = _env(deployment)
    assert {name for name in env if name.startswith("JOBQUEUE_")} <= documented
    assert env["JOBQUEUE_QUEUE"] == "high"
    assert env["JOBQUEUE_CONCURRENCY"] == "4"
    assert env["JOBQUEUE_TIME_LIMIT_SECONDS"] == "300"
    assert env["JOBQUEUE_SOFT_TIME_LIMIT_SECONDS"] == "270"
    assert env["POD_NAME"] == "<ref>"
    spec = deployment["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > 300
    container = spec["containers"][0]
    assert container["command"] == ["dumb-init", "--single-child", "--", "jobqueue-worker"]
    assert container["ports"] == [{"name": "metrics", "containerPort": 9808, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}


@pytest.mark.parametrize(("levels", "steps"), [(1, [0]), (2, [0, 9]), (4, [0, 3, 6, 9]), (10, list(range(10)))])
def test_priority_steps(levels: int, steps: list[int]) -> None:
    assert workers.priority_steps(levels) == steps


@pytest.mark.parametrize(
    ("queue", "kib"),
    [
        ({"name": "q"}, 0),
        ({"name": "q", "resources": {"limits": {"memory": "1Gi"}}, "concurrency": 4}, 209715),
        ({"name": "q", "resources": {"limits": {"memory": "1Gi"}}, "pool": "threads"}, 0),
        ({"name": "q", "maxMemoryPerChild": "200Mi", "resources": {"limits": {"memory": "1Gi"}}}, 204800),
        ({"name": "q", "maxMemoryPerChild": 1048576}, 1024),
    ],
)
def test_max_memory_per_child(queue: dict[str, Any], kib: int) -> None:
    assert workers.max_memory_per_child_kib(Queue.model_validate(queue)) == kib


@pytest.mark.parametrize(
    ("queue", "visibility", "grace"),
    [
        ({"name": "q"}, 3600, 300),
        ({"name": "q", "timeLimitSeconds": 300}, 3600, 330),
        ({"name": "q", "timeLimitSeconds": 7200}, 14400, 600),  # capped by maxShutdownSeconds' default
        ({"name": "q", "timeLimitSeconds": 7200, "maxShutdownSeconds": 9000}, 14400, 7230),
        ({"name": "q", "maxShutdownSeconds": 60}, 3600, 60),
        ({"name": "q", "timeLimitSeconds": 60, "visibilityTimeoutSeconds": 90}, 90, 90),
    ],
)
def test_time_limits_drive_visibility_and_grace(queue: dict[str, Any], visibility: int, grace: int) -> None:
    parsed = Queue.model_validate(queue)
    assert workers.visibility_timeout(parsed) == visibility
    assert workers.termination_grace(parsed) == grace
    assert workers.visibility_timeout(parsed) > (parsed.time_limit_seconds or 0)


@pytest.mark.parametrize(
    "queue",
    [
        {"name": "q"},
        {"name": "q", "timeLimitSeconds": 60},
        {"name": "q", "timeLimitSeconds": 7200},
        {"name": "q", "maxShutdownSeconds": 20},
    ],
)
def test_the_worker_hands_back_before_the_kubelets_sigkill(queue: dict[str, Any]) -> None:
    """One fact, one place: the Pod's grace period and the worker's deadline come from the same numbers."""
    jq = _sample("media")
    parsed = Queue.model_validate(queue)
    deployment = workers.deployment(jq, parsed)
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    deadline = int(_env(deployment)["JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS"])
    assert deadline == grace - workers.HAND_BACK_SECONDS
    assert deadline > 0
    if parsed.time_limit_seconds and parsed.time_limit_seconds + workers.GRACE_BEYOND_TIME_LIMIT <= grace:
        assert deadline > parsed.time_limit_seconds  # every task ends (or hits its limit) before the deadline


def test_worker_pods_spread_over_nodes_unless_the_spec_says_otherwise() -> None:
    jq = _sample("media")
    queue = jq.spec.queues[0]
    (default,) = workers.deployment(jq, queue)["spec"]["template"]["spec"]["topologySpreadConstraints"]
    assert default == {
        "maxSkew": 1,
        "topologyKey": "kubernetes.io/hostname",
        "whenUnsatisfiable": "ScheduleAnyway",
        "labelSelector": {"matchLabels": naming.selector_labels(jq, naming.WORKER, queue.name)},
        "matchLabelKeys": ["pod-template-hash"],
    }
    zones = [{"maxSkew": 2, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "DoNotSchedule"}]
    own = jq.model_copy(update={"spec": jq.spec.model_copy(update={"topology_spread_constraints": zones})})
    assert workers.deployment(own, queue)["spec"]["template"]["spec"]["topologySpreadConstraints"] == zones
    none = jq.model_copy(update={"spec": jq.spec.model_copy(update={"topology_spread_constraints": []})})
    assert "topologySpreadConstraints" not in workers.deployment(none, queue)["spec"]["template"]["spec"]


@pytest.mark.parametrize(
    ("disruption", "limit"),
    [
        ({}, {"maxUnavailable": 1}),
        ({"maxUnavailable": 0}, {"maxUnavailable": 0}),
        ({"maxUnavailable": "25%"}, {"maxUnavailable": "25%"}),
    ],
)
def test_each_queue_has_a_disruption_budget_over_its_workers(disruption: dict[str, Any], limit: Any) -> None:
    jq = _sample("media")
    queue = Queue.model_validate({"name": "video.transcode", "disruption": disruption})
    budget = workers.disruption_budget(jq, queue)
    deployment = workers.deployment(jq, queue)
    assert budget["apiVersion"] == "policy/v1"
    assert budget["metadata"]["name"] == deployment["metadata"]["name"]
    assert budget["metadata"]["ownerReferences"] == deployment["metadata"]["ownerReferences"]
    assert naming.queue_of(budget["metadata"]) == "video.transcode"  # found again once the queue left the spec
    assert budget["spec"] == {
        **limit,
        "selector": deployment["spec"]["selector"],
        "unhealthyPodEvictionPolicy": "AlwaysAllow",
    }


@pytest.mark.parametrize("bad", [-1, "25", "x%", "1.5%"])
def test_a_bad_max_unavailable_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="maxUnavailable"):
        Queue.model_validate({"name": "q", "disruption": {"maxUnavailable": bad}})


def test_replicas_belong_to_the_autoscaler_once_the_deployment_exists() -> None:
    scaled = Queue.model_validate({"name": "q", "autoscaling": {"minReplicas": 2, "maxReplicas": 9}})
    fixed = Queue.model_validate({"name": "q", "replicas": 3})
    assert workers.initial_replicas(scaled) == 2
    assert workers.initial_replicas(fixed) == 3
    assert workers.initial_replicas(Queue.model_validate({"name": "q"})) == 1
    off = Queue.model_validate({"name": "q", "replicas": 4, "autoscaling": {"enabled": False}})
    assert workers.initial_replicas(off) == 4
    jq = _sample("media")
    (high,) = [q for q in jq.spec.queues if q.name == "high"]
    assert workers.deployment(jq, high)["spec"]["replicas"] == 0
    assert "replicas" not in workers.deployment(jq, high, with_replicas=False)["spec"]


def test_every_child_is_owned_by_its_jobqueue() -> None:
    for manifest in [*children.desired(_sample("scheduled")), redis.secret(_sample("scheduled"), "pw")]:
        (reference,) = manifest["metadata"]["ownerReferences"]
        assert reference["controller"] is True
        assert (reference["kind"], reference["name"], reference["uid"]) == ("JobQueue", "nightly", "0000-uid")


def test_a_changed_secret_value_changes_the_pod_template_and_nothing_else_does() -> None:
    jq = _sample("external-broker")
    (queue,) = jq.spec.queues
    url = ("Secret", "redis-url")

    def template(config: dict[tuple[str, str], dict[str, str] | None]) -> dict[str, Any]:
        return dict(workers.deployment(jq, queue, config=config)["spec"]["template"]["metadata"])

    before = template({url: {"url": "old", "other": "x"}})
    assert template({url: {"url": "old", "other": "changed"}}) == before  # a key the Pods do not read
    assert template({url: {"url": "new", "other": "x"}}) != before


def test_every_pod_the_operator_makes_is_restricted() -> None:
    """Pod Security `restricted`: non-root, RuntimeDefault seccomp, no privilege escalation, no capabilities."""
    jq = _sample("scheduled")
    jq = jq.model_copy(
        update={"spec": jq.spec.model_copy(update={"flower": jq.spec.flower.model_copy(update={"enabled": True})})}
    )
    for manifest in children.desired(jq):
        template = manifest["spec"].get("template")
        if template is None:
            continue
        pod = template["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for container in pod["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}
            assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_every_child_has_the_labels_and_a_short_name() -> None:
    jq = _sample("scheduled")
    for manifest in children.desired(jq):
        labels = manifest["metadata"]["labels"]
        assert labels[naming.JOBQUEUE_LABEL] == "nightly"
        assert labels[naming.MANAGED_BY_LABEL] == "jobqueue-operator"
        assert len(manifest["metadata"]["name"]) <= 63
