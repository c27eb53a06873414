"""The highly available managed broker's objects (build.redis_ha, build.sentinel, build.bootstrap) and its spec.

The start-up scripts themselves run against real Redis and Sentinel processes in
tests/integration/operator/test_ha_bootstrap.py; here: what the operator asks of Kubernetes.
"""

from __future__ import annotations

import re
from typing import Any

import jsonschema
import pytest
from pydantic import ValidationError

from jobqueue_operator import naming
from jobqueue_operator.build import bootstrap, children, redis, redis_ha, sentinel
from jobqueue_operator.models import HighAvailability, JobQueue
from jobqueue_worker.contract import SENTINEL_MASTER_NAME
from tests.unit.operator.conftest import schema
from tests.unit.operator.test_crd import _defaulted


def _jq(ha: dict[str, Any] | None = None, **managed: Any) -> JobQueue:
    broker: dict[str, Any] = {"managed": {**managed, **({"highAvailability": ha} if ha is not None else {})}}
    return JobQueue.model_validate(
        {
            "name": "pay",
            "namespace": "apps",
            "uid": "u",
            "spec": {"image": "i", "app": "a:app", "queues": [{"name": "q"}], "broker": broker},
        }
    )


HA = {"enabled": True}


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(manifest: dict[str, Any]) -> dict[str, str]:
    return {var["name"]: var.get("value", "<ref>") for var in _container(manifest)["env"]}


def _arg(args: list[str], name: str) -> str:
    return args[args.index(name) + 1]


# -- the spec


def test_defaults_are_the_documented_ones() -> None:
    ha = HighAvailability()
    assert (ha.enabled, ha.down_after_milliseconds, ha.failover_timeout_milliseconds) == (False, 5000, 10000)
    assert (ha.min_replicas_to_write, ha.min_replicas_max_lag_seconds, ha.pod_anti_affinity) == (1, 10, "preferred")
    assert _jq().spec.broker.managed is not None
    assert _jq().spec.broker.managed.high_availability == ha  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("minReplicasToWrite", 3),  # only two replicas exist: the master would refuse every write
        ("minReplicasToWrite", -1),
        ("downAfterMilliseconds", 0),
        ("failoverTimeoutMilliseconds", 500),
        ("minReplicasMaxLagSeconds", 0),
        ("podAntiAffinity", "sometimes"),
        ("sentinels", 5),  # fixed at three
    ],
)
def test_bad_values_are_refused_by_the_schema_and_the_models(field: str, value: Any) -> None:
    ha = {"enabled": True, field: value}
    with pytest.raises(ValidationError) as raised:
        _jq(ha)
    assert "highAvailability" in str(raised.value) or "high_availability" in str(raised.value)
    document = {
        "apiVersion": "jobqueue.dev/v1alpha1",
        "kind": "JobQueue",
        "metadata": {"name": "pay"},
        "spec": {
            "image": "i",
            "app": "a:app",
            "queues": [{"name": "q"}],
            "broker": {"managed": {"highAvailability": ha}},
        },
    }
    validator = jsonschema.Draft7Validator(schema())
    if field == "sentinels":  # the API server prunes unknown fields; the models refuse them
        return
    errors = list(validator.iter_errors(document))
    assert len(errors) == 1
    assert list(errors[0].absolute_path)[-1] == field


def test_the_schema_defaults_are_the_models() -> None:
    node = schema()["properties"]["spec"]["properties"]["broker"]["properties"]["managed"]
    assert _defaulted(node, {})["highAvailability"] == HighAvailability().model_dump(by_alias=True)


# -- what a JobQueue gets


def test_without_high_availability_nothing_changes() -> None:
    kinds = [(m["kind"], m["metadata"]["name"]) for m in children.desired(_jq())]
    assert kinds[:2] == [("Service", "pay-redis"), ("StatefulSet", "pay-redis")]
    assert not [name for _, name in kinds if "sentinel" in name]
    assert "clusterIP" not in children.desired(_jq())[0]["spec"]
    assert redis.secret(_jq(), "pw")["stringData"] == {"password": "pw", "url": "redis://:pw@pay-redis.apps.svc:6379/0"}


def test_the_children_of_a_highly_available_broker() -> None:
    objects = children.desired(_jq(HA))
    broker = [(m["kind"], m["metadata"]["name"]) for m in objects if m["kind"] != "Deployment"]
    assert broker == [
        ("Service", "pay-redis"),
        ("StatefulSet", "pay-redis"),
        ("PodDisruptionBudget", "pay-redis"),
        ("Service", "pay-sentinel-headless"),
        ("Service", "pay-sentinel"),
        ("StatefulSet", "pay-sentinel"),
        ("PodDisruptionBudget", "pay-sentinel"),
        ("PodDisruptionBudget", "pay-q-worker"),
    ]


def test_the_secret_holds_the_sentinel_url_and_the_master_name() -> None:
    data = redis.secret(_jq(HA), "p@ss:w/rd")["stringData"]
    assert data == {
        "password": "p@ss:w/rd",
        "url": ";".join(
            f"sentinel://:p%40ss%3Aw%2Frd@pay-sentinel-{n}.pay-sentinel-headless.apps.svc:26379/0" for n in range(3)
        ),
        naming.MASTER_NAME_KEY: SENTINEL_MASTER_NAME,
    }
    assert redis.client_url(_jq(HA), "x") == data["url"].replace("p%40ss%3Aw%2Frd", "x")


@pytest.mark.parametrize("persistence", [True, False])
def test_switching_keeps_the_statefulset_identity_and_its_volume(persistence: bool) -> None:
    """Name, serviceName, selector, volume claims and updates are the single broker's: switching to high
    availability is a change of template and replicas, which the API server allows, and Pod -0 keeps its data."""
    single = redis.statefulset(_jq(persistence={"enabled": persistence}))
    ha = redis_ha.statefulset(_jq(HA, persistence={"enabled": persistence}))
    assert ha["metadata"] == single["metadata"]
    kept = ("serviceName", "selector", "updateStrategy", "volumeClaimTemplates", "persistentVolumeClaimRetentionPolicy")
    assert {k: ha["spec"].get(k) for k in kept} == {k: single["spec"].get(k) for k in kept}
    assert ha["spec"]["replicas"] == 3
    assert ha["spec"].get("podManagementPolicy") == single["spec"].get("podManagementPolicy")  # immutable too


@pytest.mark.parametrize("persistence", [True, False])
def test_every_member_writes_the_aof_and_refuses_writes_it_cannot_replicate(persistence: bool) -> None:
    jq = _jq(
        {"enabled": True, "minReplicasToWrite": 2, "minReplicasMaxLagSeconds": 7},
        persistence={"enabled": persistence},
        resources={"limits": {"memory": "1Gi"}},
    )
    args = _container(redis_ha.statefulset(jq))["args"]
    assert (_arg(args, "--appendonly"), _arg(args, "--appendfsync")) == ("yes", "everysec")
    assert _arg(args, "--maxmemory-policy") == "noeviction"
    assert managed_maxmemory(jq) == int(_arg(args, "--maxmemory")) > 0  # the single broker's memory reserve rules
    assert _arg(args, "--requirepass") == f"$({redis.PASSWORD_ENV})"
    # replication logs in as the operator's own user, whose password a rotation never changes
    assert _arg(args, "--masteruser") == redis.OPERATOR_USER
    assert _arg(args, "--masterauth") == f"$({redis.OPERATOR_PASSWORD_ENV})"
    assert (_arg(args, "--min-replicas-to-write"), _arg(args, "--min-replicas-max-lag")) == ("2", "7")


def managed_maxmemory(jq: JobQueue) -> int:
    assert jq.spec.broker.managed is not None
    return redis.maxmemory(jq.spec.broker.managed)


def test_members_and_sentinels_know_each_other_by_stable_names() -> None:
    jq = _jq(HA)
    members = _env(redis_ha.statefulset(jq))
    assert members[bootstrap.Env.MEMBER] == "$(POD_NAME).pay-redis.apps.svc:6379"
    assert members[bootstrap.Env.MEMBERS].split() == [f"pay-redis-{i}.pay-redis.apps.svc:6379" for i in range(3)]
    assert members[bootstrap.Env.SENTINELS].split() == [
        f"pay-sentinel-{i}.pay-sentinel-headless.apps.svc:26379" for i in range(3)
    ]
    assert members[bootstrap.Env.NAMED_MASTER_WAIT] == "25"  # down-after 5 s + twice the failover timeout
    sentinels = _env(sentinel.statefulset(jq))
    assert sentinels[bootstrap.Env.SENTINEL] == "$(POD_NAME).pay-sentinel-headless.apps.svc:26379"
    assert sentinels[bootstrap.Env.MEMBERS] == members[bootstrap.Env.MEMBERS]
    assert sentinels[bootstrap.Env.SENTINELS] == members[bootstrap.Env.SENTINELS]
    assert (sentinels[bootstrap.Env.QUORUM], sentinels[bootstrap.Env.DOWN_AFTER]) == ("2", "5000")
    assert sentinels[bootstrap.Env.FAILOVER_TIMEOUT] == "10000"
    pairs = ((redis_ha.statefulset(jq), bootstrap.Env.MEMBER), (sentinel.statefulset(jq), bootstrap.Env.SENTINEL))
    for manifest, own in pairs:  # $(POD_NAME) expands only in variables defined after it
        names = [var["name"] for var in _container(manifest)["env"]]
        assert names.index("POD_NAME") < names.index(own)


def test_the_scripts_survive_the_kubelets_expansion() -> None:
    """The kubelet expands `$(NAME)` of the container's variables and `$$` in command and args: the scripts
    must use neither, or the shell would see something else than what was written."""
    jq = _jq(HA)
    pairs = ((redis_ha.statefulset(jq), bootstrap.MEMBER_SCRIPT), (sentinel.statefulset(jq), bootstrap.SENTINEL_SCRIPT))
    for manifest, script in pairs:
        container = _container(manifest)
        assert container["command"] == ["sh", "-c", script, container["command"][3]]
        assert "$$" not in script
        defined = {var["name"] for var in container["env"]}
        assert not defined & set(re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", script))


def test_the_services() -> None:
    jq = _jq(HA)
    members = redis_ha.service(jq)["spec"]
    assert (members["clusterIP"], members["publishNotReadyAddresses"]) == ("None", True)
    assert members["selector"][naming.COMPONENT_LABEL] == naming.BROKER
    headless = sentinel.headless_service(jq)["spec"]
    assert (headless["clusterIP"], headless["publishNotReadyAddresses"]) == ("None", True)
    clients = sentinel.service(jq)
    assert clients["metadata"]["name"] == "pay-sentinel"
    assert "clusterIP" not in clients["spec"]
    assert clients["spec"]["ports"] == [
        {"name": "sentinel", "port": 26379, "targetPort": "sentinel", "protocol": "TCP"}
    ]
    assert clients["spec"]["selector"][naming.COMPONENT_LABEL] == naming.SENTINEL
    assert sentinel.statefulset(jq)["spec"]["serviceName"] == "pay-sentinel-headless"


def test_budgets_keep_a_quorum_and_select_only_their_own_pods() -> None:
    jq = _jq(HA)
    pairs = ((redis_ha.member_budget(jq), naming.BROKER), (sentinel.disruption_budget(jq), naming.SENTINEL))
    for budget, component in pairs:
        assert budget["spec"]["maxUnavailable"] == 1
        assert budget["spec"]["selector"]["matchLabels"] == naming.selector_labels(jq, component)


@pytest.mark.parametrize(
    ("choice", "key"),
    [
        ("preferred", "preferredDuringSchedulingIgnoredDuringExecution"),
        ("required", "requiredDuringSchedulingIgnoredDuringExecution"),
        ("none", None),
    ],
)
def test_anti_affinity_spreads_each_kind_over_nodes(choice: str, key: str | None) -> None:
    jq = _jq({"enabled": True, "podAntiAffinity": choice})
    pairs = ((redis_ha.statefulset(jq), naming.BROKER), (sentinel.statefulset(jq), naming.SENTINEL))
    for manifest, component in pairs:
        pod = manifest["spec"]["template"]["spec"]
        if key is None:
            assert "affinity" not in pod
            continue
        (term,) = pod["affinity"]["podAntiAffinity"][key]
        term = term.get("podAffinityTerm", term)
        assert term["topologyKey"] == "kubernetes.io/hostname"
        assert term["labelSelector"]["matchLabels"] == naming.selector_labels(jq, component)


def test_probes_allow_for_the_wait_for_a_promotion() -> None:
    jq = _jq({"enabled": True, "downAfterMilliseconds": 30000, "failoverTimeoutMilliseconds": 60000})
    container = _container(redis_ha.statefulset(jq))
    probe = container["startupProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] >= 30 + 2 * 60
    assert container["readinessProbe"]["exec"]["command"] == redis.readiness_command()
    sentinels = sentinel.statefulset(jq)
    assert sentinels["spec"]["podManagementPolicy"] == "Parallel"
    assert _container(sentinels)["readinessProbe"]["exec"]["command"] == sentinel.readiness_command()
