"""A running managed broker keeps its mode (reconcile/broker_mode.py): the decision on its own, and a reconcile
against the fake API server that must leave every broker object, the Secret and the Pod untouched."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from jobqueue_operator import broker_admin, naming, reconcile
from jobqueue_operator.build import children, redis
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason
from jobqueue_operator.reconcile import broker_mode
from jobqueue_operator.scaling import observe as scaling_observe
from tests.unit.operator.fake_kube import FakeKube
from tests.unit.operator.test_reconcile_broker import BODY, NOW, FakeRedis, _world

Children = dict[tuple[str, str], Manifest]


def _body(ha: bool) -> dict[str, Any]:
    body = copy.deepcopy(BODY)
    body["spec"]["broker"] = {"managed": {"highAvailability": {"enabled": ha}}}
    return body


def _jq(ha: bool) -> JobQueue:
    return JobQueue.from_body(_body(ha))


def _running(ha: bool) -> Children:
    """The children of a broker running in mode `ha`, as the operator made them."""
    found: Children = {(m["kind"], m["metadata"]["name"]): m for m in children.desired(_jq(ha))}
    return found


def test_no_running_broker_gets_the_specs_mode() -> None:
    for ha in (False, True):
        mode = broker_mode.decide(_jq(ha), {})
        assert mode.refused is None
        assert mode.jq == _jq(ha)


def test_a_broker_running_in_the_specs_mode_is_rendered_as_it_is() -> None:
    for ha in (False, True):
        assert broker_mode.running_high_availability("m", _running(ha)) is ha
        mode = broker_mode.decide(_jq(ha), _running(ha))
        assert mode.refused is None
        assert mode.jq == _jq(ha)


def test_a_running_single_broker_asked_for_high_availability_is_rendered_single_and_refused() -> None:
    mode = broker_mode.decide(_jq(True), _running(False))
    assert children.desired(mode.jq) == children.desired(_jq(False))  # no Sentinel, the Service and Secret kept
    assert mode.refused is not None
    assert "\n" not in mode.refused
    assert mode.refused.startswith(
        "switching an existing JobQueue's broker to high availability is not supported yet: the running single "
        "Redis is left unchanged"
    )
    assert "highAvailability.enabled back to false" in mode.refused


def test_a_running_highly_available_broker_asked_for_one_redis_is_rendered_highly_available_and_refused() -> None:
    mode = broker_mode.decide(_jq(False), _running(True))
    assert children.desired(mode.jq) == children.desired(_jq(True))  # its members are not scaled away
    assert mode.refused is not None
    assert mode.refused.startswith(
        "switching an existing JobQueue's broker from high availability back to a single Redis is not supported"
    )
    assert "highAvailability.enabled back to true" in mode.refused


@pytest.mark.parametrize(
    "sign",
    ["sentinel", "headless", "members"],
)
def test_any_sign_of_a_highly_available_broker_counts_as_one(sign: str) -> None:
    """A half-made highly available broker is never taken for a single one (whose rendering scales to 1)."""
    found = _running(False)
    if sign == "sentinel":
        found[("StatefulSet", naming.sentinel("m"))] = {"metadata": {"name": naming.sentinel("m")}}
    elif sign == "headless":
        found[("Service", naming.redis("m"))]["spec"]["clusterIP"] = "None"
    else:
        found[("StatefulSet", naming.redis("m"))]["spec"]["replicas"] = 3
    assert broker_mode.running_high_availability("m", found) is True
    assert broker_mode.decide(_jq(False), found).refused is not None


def test_broker_up_to_date_says_the_refusal_first_and_keeps_what_else_is_pending() -> None:
    refused = broker_mode.decide(_jq(True), _running(False))
    assert broker_mode.up_to_date(broker_mode.Mode(_jq(False)), ("True", "BrokerPodCurrent", "x")) == (
        "True",
        "BrokerPodCurrent",
        "x",
    )
    assert broker_mode.up_to_date(refused, ("True", "BrokerPodCurrent", "x")) == (
        "False",
        Reason.BROKER_MODE_SWITCH_REFUSED,
        refused.refused,
    )
    held = broker_mode.up_to_date(refused, ("False", Reason.BROKER_RESTART_HELD, "held: 6 tasks"))
    assert held is not None
    assert held[1] == Reason.BROKER_MODE_SWITCH_REFUSED
    assert held[2].endswith("; held: 6 tasks")


LOGINS: list[str] = []
"""The URLs the reconcile logged in to the managed broker with, first candidate first."""


@pytest.fixture
def redis_fake(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    fake = FakeRedis(["old"])
    for name in ("add_password", "keep_only_password"):
        monkeypatch.setattr(broker_admin, name, getattr(fake, name))

    def read_managed(candidates: list[tuple[str, bool]], count_held: bool = True) -> Any:
        LOGINS.extend(url for url, _ in candidates)
        return fake.read_managed(candidates, count_held)

    LOGINS.clear()
    monkeypatch.setattr(broker_admin, "read_managed", read_managed)
    return fake


def test_a_reconcile_of_a_refused_switch_writes_nothing_but_the_status_and_a_warning(redis_fake: FakeRedis) -> None:
    kube = FakeKube()
    _world(kube, "old", "old")
    reconcile.reconcile(kube, _body(False), reconcile.Memory(), NOW)  # the single broker runs
    kube.objects[("StatefulSet", naming.redis("m"))]["status"] = {"readyReplicas": 1}
    kube.objects[("Deployment", "m-q-worker")]["status"] = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
    before = copy.deepcopy(kube.objects)
    secrets = copy.deepcopy(kube.secrets)
    kube.calls.clear()

    LOGINS.clear()
    outcome = reconcile.reconcile(kube, _body(True), reconcile.Memory(), NOW)
    assert LOGINS
    assert all(url.startswith("redis://") for url in LOGINS)

    writes = [c for c in kube.calls if c.split()[0] in ("apply", "create", "delete", "write", "scale")]
    assert writes == []
    assert kube.objects == before
    assert kube.secrets == secrets
    assert redis_fake.writes == []
    conditions = {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}
    assert conditions["BrokerUpToDate"]["status"] == "False"
    assert conditions["BrokerUpToDate"]["reason"] == Reason.BROKER_MODE_SWITCH_REFUSED
    assert conditions["Ready"]["status"] == "True"  # the broker works meanwhile
    warnings = [e for e in outcome.events if e.reason == Reason.BROKER_MODE_SWITCH_REFUSED]
    assert [e.type for e in warnings] == ["Warning"]
    assert outcome.converged  # nothing to retry until the spec changes

    kube.calls.clear()
    reconcile.reconcile(kube, _body(False), reconcile.Memory(), NOW)  # the spec set back
    conditions = {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}
    assert conditions["BrokerUpToDate"]["status"] == "True"
    assert [c for c in kube.calls if c.startswith(("apply", "delete"))] == []


@pytest.mark.parametrize("ha", [False, True])
def test_the_tick_reads_a_broker_whose_switch_was_refused_through_the_secrets_url(
    ha: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Secret's url stays in the mode that runs: the tick logs in with it, not with the operator's URL
    for the mode the spec asks (Sentinels that do not run, or a Service that is not there)."""
    asked: list[str] = []

    def login(candidates: list[tuple[str, bool]], timeout: float = 0) -> tuple[str, bool]:
        asked.extend(url for url, _ in candidates)
        return candidates[0]

    monkeypatch.setattr(broker_admin, "login", login)
    kube = FakeKube()
    _world(kube, "old", "old")  # a single broker's Secret: redis://
    jq = _jq(ha)
    url = scaling_observe._broker_url(kube, jq, scaling_observe.UrlCache(), 0.0)
    assert url.startswith("redis://")
    assert all(candidate.startswith("redis://") for candidate in asked)
    if not ha:  # the spec's mode runs: the operator's own user first
        assert asked[0] == redis.operator_url(jq, "op")
