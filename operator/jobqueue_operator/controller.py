"""When each JobQueue is reconciled and ticked: a small work queue, fed by the watch events kopf delivers.

kopf timers and daemons put a finalizer on every object they run for, so a JobQueue could not be deleted
while the operator is down (and `helm uninstall` followed by `kubectl delete jq` would hang). The operator
therefore uses kopf only to watch (JobQueues and the children it owns) and schedules the work itself:

- a JobQueue is reconciled when it appears, when its spec, labels or annotations change, shortly after any
  child of it changes (debounced), on retry with back-off while it is not converged, and every
  `resync_seconds` as a safety net;
- its autoscaler ticks every `tick_seconds` from its first tick (sharp: the cadence does not drift by the
  tick's own duration), and at once when one of its worker Pods is deleted (prompt redelivery);
- one reconcile and one tick of a JobQueue run at a time, in two thread pools of their own, so a slow
  broker or a slow API server holds up only its own JobQueue, and ticks never wait for reconciles.

Ownership references and garbage collection clean up after a deleted JobQueue; nothing here blocks it.
"""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Final, Literal

logger = logging.getLogger(__name__)

Key = tuple[str, str]
"""(namespace, name) of a JobQueue."""
Job = Literal["reconcile", "tick"]
JOBS: Final[tuple[Job, ...]] = ("reconcile", "tick")

CHILD_DEBOUNCE_SECONDS: Final = 0.25
"""A burst of child events (a Deployment rolling its Pods) becomes one reconcile."""
SPEC_DEBOUNCE_SECONDS: Final = 0.02
"""A new or changed JobQueue is reconciled almost at once; its first events come in pairs."""


@dataclass(frozen=True)
class Timing:
    resync_seconds: float = 30.0
    tick_seconds: float = 5.0
    reconcile_threads: int = 8
    tick_threads: int = 32


Runner = Callable[[Key, Mapping[str, Any]], float | None]
"""Runs one job for a JobQueue body; returns the seconds until the next run it asks for (None: default)."""


def _identity(body: Mapping[str, Any]) -> tuple[Any, ...]:
    """What, when it changes, calls for a reconcile: not the status nor the resource version (our own
    status writes come back as events and must not cause a reconcile each)."""
    metadata = body.get("metadata") or {}
    return (
        metadata.get("generation"),
        metadata.get("uid"),
        repr(sorted((metadata.get("labels") or {}).items())),
        repr(sorted((metadata.get("annotations") or {}).items())),
        metadata.get("deletionTimestamp"),
    )


@dataclass
class _Entry:
    body: Mapping[str, Any]
    identity: tuple[Any, ...]
    due: dict[Job, float] = field(default_factory=dict)
    running: set[Job] = field(default_factory=set)
    again: set[Job] = field(default_factory=set)
    first_tick: float = 0.0
    """The tick's cadence: every `tick_seconds` from this instant."""
    references: frozenset[tuple[str, str]] = frozenset()
    """(kind, name) of the Secrets and ConfigMaps its Pods read, as its last reconcile found."""
    deleting: bool = False
    """Marked for deletion: nothing is scheduled for it any more."""


class Controller:
    """The schedule of every known JobQueue. Thread safe: kopf's handler threads feed it."""

    def __init__(
        self,
        reconcile: Runner,
        tick: Runner,
        timing: Timing = Timing(),
        forget: Callable[[Key], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._runners: dict[Job, Runner] = {"reconcile": reconcile, "tick": tick}
        self._forget = forget or (lambda key: None)
        self.timing = timing
        self._clock = clock
        self._entries: dict[Key, _Entry] = {}
        self._heap: list[tuple[float, int, Key, Job]] = []
        self._sequence = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._pools: dict[Job, ThreadPoolExecutor] = {
            "reconcile": ThreadPoolExecutor(timing.reconcile_threads, thread_name_prefix="reconcile"),
            "tick": ThreadPoolExecutor(timing.tick_threads, thread_name_prefix="tick"),
        }
        self._thread = threading.Thread(target=self._loop, name="jobqueue-controller", daemon=True)

    # -- fed by the watch handlers --------------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Schedule nothing more; wait (bounded) for the jobs that run."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self._thread.join(timeout)
        for pool in self._pools.values():
            pool.shutdown(wait=True, cancel_futures=True)

    def jobqueue_seen(self, body: Mapping[str, Any]) -> None:
        """A JobQueue was listed, added or modified. One marked for deletion is left alone from then on: a
        reconcile now would put back the owner references the garbage collector takes away when orphaning
        (`kubectl delete --cascade=orphan`), or re-create what a foreground deletion removes."""
        key = _key(body)
        identity = _identity(body)
        if (body.get("metadata") or {}).get("deletionTimestamp"):
            with self._wake:
                entry = self._entries.get(key)
                if entry is not None:
                    entry.body, entry.deleting = body, True
                    entry.due.clear()
            return
        with self._wake:
            entry = self._entries.get(key)
            if entry is None:
                now = self._clock()
                entry = self._entries[key] = _Entry(body, identity, first_tick=now + self.timing.tick_seconds)
                self._schedule(key, entry, "reconcile", now + SPEC_DEBOUNCE_SECONDS)
                self._schedule(key, entry, "tick", entry.first_tick)
                return
            entry.body = body
            if identity != entry.identity:
                entry.identity = identity
                self._schedule(key, entry, "reconcile", self._clock() + SPEC_DEBOUNCE_SECONDS)

    def jobqueue_gone(self, namespace: str, name: str) -> None:
        """A JobQueue was deleted: forget it (running jobs finish; nothing is scheduled for it again)."""
        key = (namespace, name)
        with self._wake:
            known = self._entries.pop(key, None) is not None
        if known:
            self._forget(key)

    def poke(self, key: Key, job: Job, delay: float = CHILD_DEBOUNCE_SECONDS) -> None:
        """Run `job` for `key` within `delay` seconds (something it depends on changed)."""
        with self._wake:
            entry = self._entries.get(key)
            if entry is not None:
                self._schedule(key, entry, job, self._clock() + delay)

    def read_by(self, key: Key, references: frozenset[tuple[str, str]]) -> None:
        """Record which Secrets and ConfigMaps (kind, name) the JobQueue `key`'s Pods read."""
        with self._wake:
            entry = self._entries.get(key)
            if entry is not None:
                entry.references = references

    def reference_changed(self, namespace: str, kind: str, name: str) -> None:
        """A Secret or ConfigMap changed: reconcile every JobQueue of its namespace whose Pods read it."""
        with self._wake:
            for key, entry in self._entries.items():
                if key[0] == namespace and (kind, name) in entry.references:
                    self._schedule(key, entry, "reconcile", self._clock() + CHILD_DEBOUNCE_SECONDS)

    def wanted(self, key: Key) -> bool:
        """Whether `key` is still to be worked on: known, and not marked for deletion."""
        with self._wake:
            entry = self._entries.get(key)
            return entry is not None and not entry.deleting

    def body(self, key: Key) -> Mapping[str, Any] | None:
        with self._wake:
            entry = self._entries.get(key)
            return None if entry is None else entry.body

    def keys(self) -> list[Key]:
        with self._wake:
            return sorted(self._entries)

    # -- the loop ---------------------------------------------------------------------------------------

    def _schedule(self, key: Key, entry: _Entry, job: Job, at: float) -> None:
        """Run `job` at `at` unless it is due earlier already, or the JobQueue is being deleted (lock held)."""
        if entry.deleting or (job in entry.due and entry.due[job] <= at):
            return
        entry.due[job] = at
        self._sequence += 1
        heapq.heappush(self._heap, (at, self._sequence, key, job))
        self._wake.notify_all()

    def _loop(self) -> None:
        with self._wake:
            while not self._stopping:
                now = self._clock()
                while self._heap and self._heap[0][0] <= now:
                    at, _, key, job = heapq.heappop(self._heap)
                    entry = self._entries.get(key)
                    if entry is None or entry.due.get(job) != at:
                        continue  # forgotten, or superseded by an earlier schedule
                    del entry.due[job]
                    if job in entry.running:
                        entry.again.add(job)
                        continue
                    entry.running.add(job)
                    self._pools[job].submit(self._run, key, job, entry.body)
                wait = self._heap[0][0] - now if self._heap else None
                self._wake.wait(timeout=wait)

    def _run(self, key: Key, job: Job, body: Mapping[str, Any]) -> None:
        try:
            asked = self._runners[job](key, body)
        except Exception:  # one JobQueue's failure must not stop the others: log, retry on the resync
            logger.exception("%s of JobQueue %s/%s failed", job, *key)
            asked = None
        with self._wake:
            entry = self._entries.get(key)
            if entry is None or job not in entry.running:
                return
            entry.running.discard(job)
            now = self._clock()
            if job in entry.again:
                entry.again.discard(job)
                self._schedule(key, entry, job, now)
            if job == "tick":
                self._schedule(key, entry, "tick", self._next_tick(entry, now))
            else:
                delay = self.timing.resync_seconds if asked is None else min(asked, self.timing.resync_seconds)
                self._schedule(key, entry, "reconcile", now + delay)

    def _next_tick(self, entry: _Entry, now: float) -> float:
        """The first slot of the tick's fixed cadence after `now` (a slot missed while a slow tick ran is
        skipped, not run late; an extra tick, poked between slots, leaves the cadence as it was)."""
        interval = self.timing.tick_seconds
        return entry.first_tick + interval * (math.floor((now - entry.first_tick) / interval) + 1)


def _key(body: Mapping[str, Any]) -> Key:
    metadata = body.get("metadata") or {}
    return str(metadata.get("namespace") or ""), str(metadata.get("name") or "")
