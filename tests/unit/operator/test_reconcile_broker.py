"""reconcile() of a managed broker against the fake API server and a fake Redis (broker_admin patched): the
order of the writes of a password rotation and of a held restart, and what a failed write holds back."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import Any

import pytest

from jobqueue_operator import broker, broker_admin, broker_password, naming, reconcile
from jobqueue_operator.broker_state import Held, ManagedState
from jobqueue_operator.reasons import Reason
from tests.unit.operator.fake_kube import FakeKube

NOW = "2030-01-01T00:00:00Z"
BODY: dict[str, Any] = {
    "apiVersion": "jobqueue.dev/v1alpha1",
    "kind": "JobQueue",
    "metadata": {"name": "m", "namespace": "ns", "uid": "uid-1", "generation": 1},
    "spec": {"image": "i", "app": "a:app", "queues": [{"name": "q", "replicas": 1}]},
}


class FakeRedis:
    """What the reconcile reads of Redis, and the writes it makes, in order."""

    def __init__(self, accepted: Sequence[str], held: Held | None = None) -> None:
        self.accepted = {broker_password.digest(p) for p in accepted}
        self.held = held
        self.writes: list[str] = []
        self.fail: str | None = None

    def read_managed(self, candidates: Sequence[tuple[str, bool]], count_held: bool = True) -> Any:
        url, as_operator = candidates[0]
        return url, ManagedState(as_operator, frozenset(self.accepted), self.held if count_held else None, False)

    def add_password(self, url: str, password: str) -> None:
        if self.fail == "add":
            raise broker.BrokerError("refused")
        self.writes.append(f"add {password}")
        self.accepted.add(broker_password.digest(password))

    def keep_only_password(self, url: str, password: str) -> None:
        self.writes.append(f"keep {password}")
        self.accepted = {broker_password.digest(password)}


@pytest.fixture
def redis_fake(monkeypatch: pytest.MonkeyPatch) -> FakeRedis:
    fake = FakeRedis(["old"])
    for name in ("read_managed", "add_password", "keep_only_password"):
        monkeypatch.setattr(broker_admin, name, getattr(fake, name))
    return fake


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _world(kube: FakeKube, password: str, url_password: str) -> None:
    """A running JobQueue: its Secrets, and its Redis Pod running."""
    url = f"redis://:{url_password}@m-redis.ns.svc:6379/0"
    kube.secrets[naming.redis_secret("m")] = {naming.PASSWORD_KEY: _b64(password), naming.URL_KEY: _b64(url)}
    kube.secrets[naming.redis_operator_secret("m")] = {naming.PASSWORD_KEY: _b64("op")}
    for name in (naming.redis_secret("m"), naming.redis_operator_secret("m")):
        kube.objects[("Secret", name)] = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}}
    labels = {naming.JOBQUEUE_LABEL: "m", naming.MANAGED_BY_LABEL: naming.OPERATOR_NAME}
    kube.pods_by_selector = [
        {
            "metadata": {"name": "m-redis-0", "labels": {**labels, naming.COMPONENT_LABEL: naming.BROKER}},
            "spec": {"containers": [{"name": "redis"}]},
            "status": {"containerStatuses": [{"name": "redis", "state": {"running": {}}}]},
        }
    ]


def _run(kube: FakeKube) -> reconcile.Outcome:
    return reconcile.reconcile(kube, BODY, reconcile.Memory(), NOW)


def test_a_new_password_is_added_to_redis_before_the_secrets_url_carries_it(redis_fake: FakeRedis) -> None:
    kube = FakeKube()
    _world(kube, "new", "old")
    outcome = _run(kube)
    assert redis_fake.writes == ["add new"]
    assert not any(c.startswith("write Secret") for c in kube.calls)  # the url waits for the next reconcile
    assert ("Normal", Reason.BROKER_PASSWORD_ROTATING) in {(e.type, e.reason) for e in outcome.events}
    assert not outcome.converged  # come back soon for the next step

    kube.calls.clear()
    _run(kube)  # step 2: Redis accepts it: the url is rewritten before the workers are applied with its hash
    write = kube.calls.index(f"write Secret {naming.redis_secret('m')} {naming.URL_KEY}")
    assert write < kube.calls.index("apply Deployment m-q-worker")
    conditions = {c["type"]: c for c in kube.status[naming.FIELD_MANAGER]["conditions"]}
    assert conditions["BrokerUpToDate"]["reason"] == Reason.BROKER_PASSWORD_ROTATING
    assert redis_fake.writes == ["add new"]  # the old password stays: the worker Pods have not rolled


def test_a_failed_broker_write_holds_the_children_back(redis_fake: FakeRedis) -> None:
    kube = FakeKube()
    _world(kube, "new", "old")
    redis_fake.fail = "add"
    outcome = _run(kube)
    assert not any(c.startswith("apply") for c in kube.calls)
    assert Reason.BROKER_CONFIGURE_FAILED in {e.reason for e in outcome.events}
    assert Reason.BROKER_PASSWORD_ROTATING not in {e.reason for e in outcome.events}


def test_the_old_password_is_dropped_once_no_pod_runs_with_it(redis_fake: FakeRedis) -> None:
    kube = FakeKube()
    _world(kube, "new", "new")
    redis_fake.accepted.add(broker_password.digest("new"))
    outcome = _run(kube)  # no worker Pod runs yet: none runs the old configuration
    assert redis_fake.writes == ["keep new"]
    assert ("Normal", Reason.BROKER_PASSWORD_ROTATED) in {(e.type, e.reason) for e in outcome.events}
