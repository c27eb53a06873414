"""What leader.py adds to the kubernetes client's election, against a fake Lease API: failures are refusals
(never an exception that would end the client's loop unseen), holder changes are counted, a released lock
writes nothing, and the watchdog ends a leader that has not renewed within its deadline."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import urllib3
from kubernetes import client
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord

from jobqueue_operator import leader


class FakeLeases:
    """The three calls the lock makes; `fail` makes every call raise what a dead connection raises."""

    def __init__(self) -> None:
        self.lease: Any = None
        self.fail = False
        self.replaced = 0

    def _check(self) -> None:
        if self.fail:
            raise urllib3.exceptions.MaxRetryError(None, "/leases", "connection refused")  # type: ignore[arg-type]

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        self._check()
        if self.lease is None:
            raise client.ApiException(status=404, reason="Not Found")
        return self.lease

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        self._check()
        self.lease = body
        return body

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        self._check()
        self.lease, self.replaced = body, self.replaced + 1
        return body


def _lock(leases: FakeLeases, identity: str = "me") -> leader._Lock:
    lock = leader._Lock(client.ApiClient(), "jobqueue-operator", "ns", identity, timeout=1.0)
    lock.api_instance = leases  # type: ignore[assignment]
    return lock


def _record(holder: str) -> LeaderElectionRecord:
    now = "2026-12-07 05:00:00.000000"
    return LeaderElectionRecord(holder, "10", now, now)


def test_a_dead_connection_is_a_refusal_not_an_exception() -> None:
    leases = FakeLeases()
    leases.fail = True
    lock = _lock(leases)
    found, _ = lock.get("jobqueue-operator", "ns")
    assert not found
    assert not lock.create("jobqueue-operator", "ns", _record("me"))
    assert lock.renewed == 0.0


def test_taking_the_lease_from_another_holder_counts_a_transition_and_renewing_does_not() -> None:
    leases = FakeLeases()
    other = _lock(leases, "other")
    assert other.create("jobqueue-operator", "ns", _record("other"))
    mine = _lock(leases)
    assert mine.get("jobqueue-operator", "ns")[0]
    before = time.monotonic()
    assert mine.update("jobqueue-operator", "ns", _record("me"))
    assert leases.lease.spec.lease_transitions == 1
    assert mine.renewed >= before
    assert mine.update("jobqueue-operator", "ns", _record("me"))
    assert leases.lease.spec.lease_transitions == 1
    assert leases.lease.spec.holder_identity == "me"


def test_a_released_lock_writes_nothing() -> None:
    leases = FakeLeases()
    lock = _lock(leases)
    assert lock.create("jobqueue-operator", "ns", _record("me"))
    lock.refusing = True
    assert not lock.update("jobqueue-operator", "ns", _record("me"))
    assert leases.replaced == 0


@pytest.mark.timeout(30)
def test_the_watchdog_ends_a_leader_past_its_renew_deadline() -> None:
    lost = threading.Event()
    reasons: list[str] = []

    def on_lost(reason: str) -> None:
        reasons.append(reason)
        lost.set()

    elector = leader.Elector(client.ApiClient(), "jobqueue-operator", "ns", "me", (10, 7.0, 1.0), lambda: None, on_lost)
    elector._lock.api_instance = FakeLeases()  # type: ignore[assignment]
    elector.is_leader = True
    elector._lock.renewed = time.monotonic() - 8.0  # last renewed 8 s ago: past the 7 s deadline
    threading.Thread(target=elector._watch, daemon=True).start()
    assert lost.wait(10)
    assert reasons == ["Lease ns/jobqueue-operator not renewed within 7 s"]
