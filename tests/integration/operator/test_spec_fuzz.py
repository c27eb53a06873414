"""Bad specs at scale: hypothesis generates JobQueue specs, valid and invalid, and applies each to the real
API server while the operator runs. Each one is either refused by the API server with the field named, or
reconciled to a consistent state: a status for its generation whose conditions give a known reason, one
worker Deployment per queue, a Redis exactly when the broker is managed. The operator never crashes or
reconciles in a loop, and nothing is left behind once the JobQueues are deleted.

The namespace's quota admits no Pod, so the hundreds of JobQueues cost API objects only (their Pods are
refused, which the status must then say).
"""

from __future__ import annotations

import collections
import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any, Final

import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.operator_process import HostOperator, host_operator
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import naming
from jobqueue_operator.reasons import Reason
from tests.integration.operator.conftest import GROUP, PLURAL, VERSION

BATCH: Final = 25
BATCHES: Final = 20
"""500 specs in all, applied 25 at a time."""
KNOWN_REASONS: Final = {str(reason) for reason in Reason}
OUTCOMES: collections.Counter[str] = collections.Counter()

# -- the specs ------------------------------------------------------------------------------------------
# A valid spec is drawn first; about half of them then get one mistake of the kinds users make (a value
# out of range, a typo'd field, a forbidden combination, a missing Secret), so each refusal has one cause.

queue_names = st.sampled_from(
    ["a", "high", "low", "q-1", "media-thumbnails", "x" * 40, "high_priority", "video.transcode", "CamelCase", "Q"]
)


@st.composite
def valid_queues(draw: st.DrawFn, name: str) -> dict[str, Any]:
    queue: dict[str, Any] = {"name": name, "concurrency": draw(st.integers(1, 8))}
    pool = draw(st.sampled_from(["prefork", "threads", "solo"]))
    queue["pool"] = pool
    if draw(st.booleans()):
        queue["resources"] = {"limits": {"memory": draw(st.sampled_from(["256Mi", "1Gi", "512M"]))}}
    if pool == "prefork" and draw(st.integers(0, 3)) == 0:
        queue["maxMemoryPerChild"] = "200Mi"
    if draw(st.booleans()):
        hard = draw(st.integers(10, 3600))
        queue["timeLimitSeconds"] = hard
        if draw(st.booleans()):
            queue["softTimeLimitSeconds"] = draw(st.integers(1, hard - 1))
        if draw(st.booleans()):
            queue["visibilityTimeoutSeconds"] = hard + draw(st.integers(1, 3600))
    if draw(st.booleans()):
        low = draw(st.integers(0, 3))
        block: dict[str, Any] = {"minReplicas": low, "maxReplicas": low + draw(st.integers(0, 5))}
        if draw(st.booleans()):
            block["targetWaitSeconds"] = draw(st.integers(1, 600))
        if draw(st.booleans()):
            block["enabled"] = draw(st.booleans())
        queue["autoscaling"] = block
    elif draw(st.booleans()):
        queue["replicas"] = draw(st.integers(0, 3))
    if draw(st.integers(0, 3)) == 0:
        queue["priorityLevels"] = draw(st.integers(1, 10))
    return queue


@st.composite
def valid_specs(draw: st.DrawFn) -> dict[str, Any]:
    names = draw(st.lists(queue_names, min_size=1, max_size=4, unique=True))
    spec: dict[str, Any] = {
        "image": draw(st.sampled_from(["ghcr.io/acme/w:1", "w", "registry.local:5000/team/worker@sha256:" + "a" * 64])),
        "app": draw(st.sampled_from(["tasks:app", "pkg.celery:app", "pkg"])),
        "queues": [draw(valid_queues(name)) for name in names],
    }
    broker = draw(st.sampled_from(["default", "managed", "persistent", "external", "missing-secret"]))
    spec["broker"] = {
        "default": None,
        "managed": {"managed": {}},
        "persistent": {"managed": {"persistence": {"enabled": True, "size": "1Gi"}}},
        "external": {"external": {"urlSecretRef": {"name": "fuzz-broker", "key": "url"}}},
        "missing-secret": {"external": {"urlSecretRef": {"name": "missing", "key": "url"}}},
    }[broker]
    if spec["broker"] is None:
        del spec["broker"]
    if draw(st.integers(0, 3)) == 0:
        spec["env"] = [{"name": "FEATURE", "value": "on"}]
    if draw(st.integers(0, 4)) == 0:
        spec["beat"] = {"enabled": True}
    if draw(st.integers(0, 5)) == 0:
        spec["results"] = {"backendSecretRef": {"name": "no-such-secret", "key": "url"}}
    return spec


MISTAKES: Final = [
    ("queues", lambda s: {**s, "queues": []}),
    ("no queue name", lambda s: {**s, "queues": [{k: v for k, v in q.items() if k != "name"} for q in s["queues"]]}),
    ("duplicate queue", lambda s: {**s, "queues": [*s["queues"], s["queues"][0]]}),
    ("queue name pattern", lambda s: _queue(s, name="bad name")),
    ("queue name length", lambda s: _queue(s, name="x" * 201)),
    ("queue named unacked", lambda s: _queue(s, name="unacked")),
    ("queue named as a kombu key", lambda s: _queue(s, name="_kombu.binding.celery")),
    ("concurrency 0", lambda s: _queue(s, concurrency=0)),
    ("concurrency 300", lambda s: _queue(s, concurrency=300)),
    ("concurrency as text", lambda s: _queue(s, concurrency="four")),
    ("unknown pool", lambda s: _queue(s, pool="forking")),
    ("typo'd field", lambda s: _queue(s, concurency=2)),
    ("bad quantity", lambda s: _queue(s, resources={"limits": {"memory": "lots"}})),
    ("soft >= hard", lambda s: _queue(s, timeLimitSeconds=60, softTimeLimitSeconds=60)),
    ("visibility <= hard", lambda s: _queue(s, timeLimitSeconds=60, visibilityTimeoutSeconds=30)),
    ("min > max", lambda s: _queue(s, autoscaling={"minReplicas": 5, "maxReplicas": 2}, replicas=None)),
    ("replicas and autoscaling", lambda s: _queue(s, autoscaling={"maxReplicas": 3}, replicas=2)),
    ("negative replicas", lambda s: _queue(s, replicas=-1, autoscaling=None)),
    ("maxMemoryPerChild on threads", lambda s: _queue(s, pool="threads", maxMemoryPerChild="100Mi")),
    (
        "two brokers",
        lambda s: {**s, "broker": {"managed": {}, "external": {"urlSecretRef": {"name": "x", "key": "u"}}}},
    ),
    ("no broker", lambda s: {**s, "broker": {}}),
    ("empty image", lambda s: {**s, "image": ""}),
    ("app pattern", lambda s: {**s, "app": "9bad:"}),
    ("reserved env", lambda s: {**s, "env": [{"name": "JOBQUEUE_QUEUE", "value": "x"}]}),
    ("no app", lambda s: {k: v for k, v in s.items() if k != "app"}),
]


def _queue(spec: dict[str, Any], **fields: Any) -> dict[str, Any]:
    """`spec` with fields set (None: removed) on its first queue."""
    first = {**spec["queues"][0], **fields}
    first = {k: v for k, v in first.items() if v is not None}
    return {**spec, "queues": [first, *spec["queues"][1:]]}


@st.composite
def specs(draw: st.DrawFn) -> dict[str, Any]:
    spec = draw(valid_specs())
    if draw(st.booleans()):
        _, mistake = draw(st.sampled_from(MISTAKES))
        spec = mistake(spec)
    return spec


# -- the checks -----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def fuzz_operator(
    local_cluster: cluster.ClusterState,
    core: client.CoreV1Api,
    apps: client.AppsV1Api,
    crd: None,
    tmp_path_factory: pytest.TempPathFactory,
    redis_url: str,
) -> Iterator[tuple[str, HostOperator]]:
    name = f"fuzz-{int(time.time()) % 100000}"
    core.create_namespace({"metadata": {"name": name, "labels": {"jobqueue.dev/test": "true"}}})
    core.create_namespaced_resource_quota(name, {"metadata": {"name": "no-pods"}, "spec": {"hard": {"pods": "0"}}})
    core.create_namespaced_secret(name, {"metadata": {"name": "fuzz-broker"}, "stringData": {"url": redis_url}})
    log = tmp_path_factory.mktemp("fuzz") / "operator.log"
    with host_operator(local_cluster.kubeconfig, name, log) as running:
        yield name, running
        custom = client.CustomObjectsApi(core.api_client)
        custom.delete_collection_namespaced_custom_object(GROUP, VERSION, name, PLURAL)
        _nothing_left(apps, core, name)
    assert running.process.returncode in (0, -15), log.read_text()[-3000:]
    text = log.read_text()
    assert "Traceback" not in text, text[text.index("Traceback") - 2000 :][:6000]
    print("spec fuzz outcomes:", json.dumps(dict(OUTCOMES.most_common()), indent=1))
    core.delete_namespace(name)


def _nothing_left(apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str) -> None:
    """Every child of every deleted JobQueue garbage-collected."""
    selector = "app.kubernetes.io/managed-by=jobqueue-operator"

    def empty() -> bool:
        return not (
            apps.list_namespaced_deployment(namespace, label_selector=selector).items
            or apps.list_namespaced_stateful_set(namespace, label_selector=selector).items
            or core.list_namespaced_service(namespace, label_selector=selector).items
            or core.list_namespaced_secret(namespace, label_selector=selector).items
        )

    wait_until(empty, timeout=120, what="every child garbage-collected")


def _reconciles(operator: HostOperator) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{operator.metrics_port}/metrics", timeout=5) as reply:
        for line in reply.read().decode().splitlines():
            if line.startswith("jobqueue_reconcile_duration_seconds_count"):
                return float(line.split()[-1])
    return 0.0


def _create(custom: client.CustomObjectsApi, namespace: str, body: dict[str, Any]) -> client.ApiException | None:
    """Create the JobQueue as `kubectl apply` would (unknown fields refused); the refusal, if any."""
    try:
        custom.create_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, body, field_validation="Strict")
    except client.ApiException as exc:
        return exc
    return None


def _refusal_names_a_field(exc: client.ApiException) -> bool:
    detail = json.loads(exc.body or "{}")
    message = str(detail.get("message", ""))
    # 422: the schema or a CEL rule; 400: strict decoding (an unknown field). Both name the field.
    return exc.status in (400, 422) and ("spec" in message or "metadata.name" in message)


def _desired(queue: dict[str, Any]) -> int:
    autoscaling = queue.get("autoscaling")
    if autoscaling is not None and autoscaling.get("enabled", True):
        return int(autoscaling.get("minReplicas", 0))
    return int(queue.get("replicas", 1))


def expected_ready_reason(spec: dict[str, Any]) -> str:
    """The one true reason a valid spec is (not) Ready in a namespace that admits no Pod."""
    if (spec.get("results") or {}).get("backendSecretRef"):
        return Reason.RESULT_BACKEND_SECRET_MISSING
    broker = spec.get("broker") or {"managed": {}}
    if "managed" in broker:
        return Reason.REDIS_PODS_REFUSED
    if broker["external"]["urlSecretRef"]["name"] == "missing":
        return Reason.BROKER_SECRET_MISSING
    if any(_desired(queue) > 0 for queue in spec["queues"]):
        return Reason.WORKER_PODS_REFUSED
    return Reason.ALL_QUEUES_AVAILABLE


def _settled(body: dict[str, Any], apps: client.AppsV1Api, namespace: str) -> str | None:
    """The outcome once the status describes this generation truthfully; None while it does not yet."""
    generation = body["metadata"]["generation"]
    status = body.get("status") or {}
    conditions = {c["type"]: c for c in status.get("conditions") or []}
    ready = conditions.get("Ready")
    if status.get("observedGeneration") != generation or ready is None or ready.get("observedGeneration") != generation:
        return None
    for condition in conditions.values():
        assert condition["reason"] in KNOWN_REASONS, condition
        assert condition["message"], condition
    if ready["reason"] == Reason.INVALID_SPEC:  # the schema let it through, the operator cannot run it
        assert "spec" in ready["message"], ready
        return f"accepted, Ready=False {ready['reason']}"
    if ready["reason"] != expected_ready_reason(body["spec"]):
        return None  # not yet (a Pod refused is seen a moment after the child is applied)
    name = body["metadata"]["name"]
    selector = f"jobqueue.dev/jobqueue={name}"
    deployments = {d.metadata.name for d in apps.list_namespaced_deployment(namespace, label_selector=selector).items}
    assert {naming.worker_deployment(name, q["name"]) for q in body["spec"]["queues"]} <= deployments
    statefulsets = apps.list_namespaced_stateful_set(namespace, label_selector=selector).items
    managed = "managed" in (body["spec"].get("broker") or {"managed": {}})
    assert bool(statefulsets) == managed, (body["spec"].get("broker"), [s.metadata.name for s in statefulsets])
    return f"accepted, Ready={ready['status']} {ready['reason']}"


@seed(20261202)
@settings(
    max_examples=BATCHES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    database=None,
    phases=[Phase.generate],  # every example costs real API calls: report a failure as found, do not shrink it
)
@given(batch=st.lists(specs(), min_size=BATCH, max_size=BATCH))
def test_every_spec_is_refused_naming_the_field_or_reconciled_truthfully(
    batch: list[dict[str, Any]],
    fuzz_operator: tuple[str, HostOperator],
    custom: client.CustomObjectsApi,
    apps: client.AppsV1Api,
    core: client.CoreV1Api,
) -> None:
    namespace, operator = fuzz_operator
    accepted: list[str] = []
    for i, spec in enumerate(batch):
        name = f"f{len(OUTCOMES) + i}-{int(time.monotonic() * 1000) % 100000}"
        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "JobQueue", "metadata": {"name": name}, "spec": spec}
        refusal = _create(custom, namespace, body)
        if refusal is None:
            accepted.append(name)
            continue
        assert _refusal_names_a_field(refusal), (spec, refusal.body)
        OUTCOMES["refused by the API server, field named"] += 1
    outcomes: dict[str, str] = {}

    def all_settled() -> bool:
        for name in accepted:
            if name not in outcomes:
                found = _settled(custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name), apps,
                                    namespace)  # fmt: skip
                if found is not None:
                    outcomes[name] = found
        return len(outcomes) == len(accepted)

    before = _reconciles(operator)
    try:
        wait_until(all_settled, timeout=120, what=f"{len(accepted)} JobQueues reconciled", interval=0.5)
    except Exception:
        late = [n for n in accepted if n not in outcomes]
        bodies = [custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, n) for n in late[:3]]
        shown = [
            (b["spec"], expected_ready_reason(b["spec"]), [c for c in b.get("status", {}).get("conditions", [])])
            for b in bodies
        ]
        raise AssertionError(json.dumps(shown, indent=1)[:8000]) from None
    OUTCOMES.update(outcomes.values())
    for name in accepted:
        custom.delete_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
    wait_until(lambda: not custom.list_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL)["items"],
               timeout=60, what="the JobQueues deleted")  # fmt: skip
    # No hot loop: a JobQueue that does not converge is retried with back-off (2 s doubling), not spun on.
    assert _reconciles(operator) - before <= 12 * max(len(accepted), 1)
