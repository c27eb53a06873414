"""The Lease: which of the operator's replicas leads. The election is the kubernetes client's
(`kubernetes.leaderelection`, client-go's algorithm on a `coordination.k8s.io/v1` Lease); election.py has
the timings and why they are safe.

The client's implementation is thin, so this module adds what client-go has and it lacks, without
changing its algorithm:

- every request has a timeout and any failure counts as a refusal: the client's loop has neither, so one
  hung request would stall a leader past its deadline and one connection error would end the loop unseen;
- a watchdog: a leader that has not renewed within the renew deadline exits at once, however the loop
  fares (the client's own check lets a leader run one retry period past it);
- `leaseTransitions` counts holder changes, as client-go's does;
- `release()` on a clean shutdown clears the holder, so a standby takes over within a retry period instead
  of waiting out the lease (client-go's ReleaseOnCancel);
- its own API client (the client's lock uses the process-wide default configuration).

Losing the Lease ends the process (`os._exit`): whatever it was doing stops before a standby can take
over, and the container restarts it as a standby. This is controller-runtime's choice too.
"""

from __future__ import annotations

import datetime
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, Final

from kubernetes import client
from kubernetes.leaderelection import electionconfig, leaderelection
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from jobqueue_operator import election

logger = logging.getLogger(__name__)
LOST_EXIT_CODE: Final = 3
"""The exit status of a process that lost the Lease (distinct from a crash's 1)."""


class _Timed:
    """The three Lease calls the client's lock makes, each with a timeout."""

    def __init__(self, api: client.CoordinationV1Api, timeout: float) -> None:
        self.api, self.timeout = api, timeout

    def read_namespaced_lease(self, name: str, namespace: str) -> Any:
        return self.api.read_namespaced_lease(name, namespace, _request_timeout=self.timeout)

    def create_namespaced_lease(self, namespace: str, body: Any) -> Any:
        return self.api.create_namespaced_lease(namespace, body, _request_timeout=self.timeout)

    def replace_namespaced_lease(self, name: str, namespace: str, body: Any) -> Any:
        return self.api.replace_namespaced_lease(
            name=name, namespace=namespace, body=body, _request_timeout=self.timeout
        )


class _Lock(LeaseLock):  # type: ignore[misc]
    """The client's LeaseLock: own API client, timeouts, failures as refusals, transitions counted, and a
    note of each successful write (the watchdog's clock)."""

    def __init__(self, api: client.ApiClient, name: str, namespace: str, identity: str, timeout: float) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = _Timed(client.CoordinationV1Api(api), timeout)
        self.renewed = 0.0
        """time.monotonic() of the last create or update that succeeded (0: none)."""
        self.holder: str | None = None
        """The holder as last read, for the log."""
        self.refusing = False
        """Set once released: no more writes."""

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        try:
            found, record = super().get(name, namespace)
        except Exception as exc:  # the client's loop dies on anything but an ApiException
            logger.warning("cannot read Lease %s/%s: %s", namespace, name, exc)
            return False, exc
        holder = record.holder_identity if found else None
        if found and holder != self.holder:
            logger.info("Lease %s/%s is held by %s", namespace, name, holder or "nobody")
            self.holder = holder
        return found, record

    def create(self, name: str, namespace: str, election_record: Any) -> bool:
        if self.refusing:
            return False
        return self._write(
            "create", name, namespace, lambda: super(_Lock, self).create(name, namespace, election_record)
        )

    def update(self, name: str, namespace: str, updated_record: Any) -> bool:
        if self.refusing or self.lease_reference is None:
            return False
        spec = self.lease_reference.spec
        if spec is not None and spec.holder_identity != updated_record.holder_identity:
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        return self._write(
            "update", name, namespace, lambda: super(_Lock, self).update(name, namespace, updated_record)
        )

    def _write(self, verb: str, name: str, namespace: str, write: Callable[[], Any]) -> bool:
        """One write of the Lease: a failure is a refusal (logged), a success notes when it was sent."""
        before = time.monotonic()
        try:
            done = bool(write())
        except Exception as exc:  # the client's loop dies on anything but an ApiException
            logger.warning("cannot %s Lease %s/%s: %s", verb, namespace, name, exc)
            return False
        if done:
            self.renewed = before  # the write may have landed as soon as it was sent: count from then
        return done


def _exit_now(reason: str) -> None:
    """Stop every write of this process at once: the container restarts it as a standby."""
    logger.critical("%s: exiting so that no two operators write at once", reason)
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(LOST_EXIT_CODE)


class Elector:
    """One candidate for one Lease. `start()` returns at once; `leading()` is called (in the election's
    thread) once this process holds the Lease; `lost(reason)` when it can no longer be sure it does."""

    def __init__(
        self,
        api: client.ApiClient,
        name: str,
        namespace: str,
        identity: str,
        timing: tuple[int, float, float],
        leading: Callable[[], None],
        lost: Callable[[str], None] = _exit_now,
    ) -> None:
        self.name, self.namespace, self.identity = name, namespace, identity
        self.lease_duration, self.renew_deadline, self.retry_period = timing
        self._lock = _Lock(api, name, namespace, identity, timeout=self.renew_deadline / 2)
        self._leading, self._lost = leading, lost
        self._api = api
        self.is_leader = False
        self._stopping = threading.Event()
        self._ended = threading.Lock()
        config = electionconfig.Config(
            self._lock, self.lease_duration, self.renew_deadline, self.retry_period, self._started, self._stopped
        )
        self._election = leaderelection.LeaderElection(config)

    def start(self) -> None:
        logger.info(
            "leader election: %s stands by for Lease %s/%s (a standby takes over %g s after the leader stops)",
            self.identity,
            self.namespace,
            self.name,
            election.takeover_seconds(self.lease_duration, self.retry_period),
        )
        threading.Thread(target=self._run, name="leader-election", daemon=True).start()
        threading.Thread(target=self._watch, name="leader-watchdog", daemon=True).start()

    def lease(self) -> dict[str, Any]:
        """The Lease as an object reference (for an Event about it)."""
        uid = self._lock.lease_reference.metadata.uid if self._lock.lease_reference is not None else None
        metadata = {"name": self.name, "namespace": self.namespace, "uid": uid}
        return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata}

    def release(self) -> None:
        """Give the Lease up on a clean shutdown (after the last write): clear its holder so a standby takes it
        at its next look. Never raises; a Lease not released expires on its own."""
        self._stopping.set()
        self._lock.refusing = True
        if not self.is_leader:
            return
        api = client.CoordinationV1Api(self._api)
        try:
            lease = api.read_namespaced_lease(self.name, self.namespace, _request_timeout=self.renew_deadline)
            if lease.spec is None or lease.spec.holder_identity != self.identity:
                return
            now = datetime.datetime.now(datetime.UTC)
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = lease.spec.acquire_time = now
            api.replace_namespaced_lease(self.name, self.namespace, lease, _request_timeout=self.renew_deadline)
            logger.info("leader election: %s released Lease %s/%s", self.identity, self.namespace, self.name)
        except Exception as exc:
            logger.warning("cannot release Lease %s/%s (it expires on its own): %s", self.namespace, self.name, exc)

    def _run(self) -> None:
        try:
            self._election.run()
        except BaseException as exc:  # the loop must never end unseen
            self._stopped(f"the election ended: {exc!r}")
        else:  # run() returns only after a leader failed to renew (and called _stopped)
            self._stopped("the election ended")

    def _started(self) -> None:
        self.is_leader = True
        logger.info("leader election: %s leads (Lease %s/%s)", self.identity, self.namespace, self.name)
        self._leading()

    def _stopped(self, reason: str = "") -> None:
        """The election's loop ended (a leader that could not renew, or an error): `lost`, once."""
        if self._stopping.is_set() or not self._ended.acquire(blocking=False):
            return
        self._lost(reason or f"Lease {self.namespace}/{self.name} not renewed within {self.renew_deadline:g} s")

    def _watch(self) -> None:
        while not self._stopping.wait(election.WATCHDOG_SECONDS):
            if self.is_leader and election.overdue(self._lock.renewed, time.monotonic(), self.renew_deadline):
                self._stopped(f"Lease {self.namespace}/{self.name} not renewed within {self.renew_deadline:g} s")
                return
