"""The operator's running parts, wired together: the API client, the metrics, the controller that
schedules every JobQueue's reconcile and tick, and what each JobQueue's runs remember."""

from __future__ import annotations

import contextlib
import datetime
import functools
import logging
from collections.abc import Mapping
from typing import Any, Final

from jobqueue_operator import controller, kube, metrics, models, node_reads, reconcile, scaling, status
from jobqueue_operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


FOLDED_DELAY_SECONDS = 1.0
"""A reconcile reads the JobQueue as the watch last delivered it: this long after the tick's status write,
it has the condition the reconciler folds into Ready."""


FOLDED: Final = (status.RESULT_BACKEND_READY, status.BROKER_AVAILABLE)
"""The tick's conditions the reconciler folds into Ready and Degraded."""


def _folded(written: Mapping[str, Any] | None) -> list[tuple[str, str, str]]:
    """(type, status, reason) of the tick's conditions the reconciler folds into Ready and Degraded."""
    return [
        (str(condition.get("type")), str(condition.get("status")), str(condition.get("reason")))
        for condition in (written or {}).get("conditions") or []
        if condition.get("type") in FOLDED
    ]


class Runtime:
    def __init__(self, client: kube.KubeApi, registry: metrics.OperatorMetrics, settings: OperatorSettings) -> None:
        self.client, self.metrics, self.settings = client, registry, settings
        self._started = False
        self._reconciles: dict[controller.Key, reconcile.Memory] = {}
        self._ticks: dict[controller.Key, scaling.Memory] = {}
        timing = controller.Timing(
            resync_seconds=settings.resync_seconds,
            tick_seconds=settings.autoscale_seconds,
            reconcile_threads=settings.reconcile_threads,
            tick_threads=settings.tick_threads,
        )
        self.controller = controller.Controller(self._reconcile, self._tick, timing, forget=self._forget)
        self.node_reads = node_reads.NodeReads(client, settings.autoscale_seconds, settings.node_lease_grace_seconds)
        """The nodes, read at most once per tick interval for every JobQueue (a lost node's workers)."""

    def start(self) -> None:
        """Start working: the leader's controller runs every JobQueue the watch has delivered so far (a
        standby keeps them without acting, so it takes over with what it knows)."""
        self._started = True
        self.controller.start()

    def stop(self) -> None:
        if self._started:
            self.controller.stop()

    def _reconcile(self, key: controller.Key, body: Mapping[str, Any]) -> float | None:
        memory = self._reconciles.setdefault(key, reconcile.Memory())
        with self.metrics.reconcile_seconds.time():
            wanted = functools.partial(self.controller.wanted, key)
            outcome = reconcile.reconcile(self.client, body, memory, _now(), wanted, self.node_reads)
        self.controller.read_by(key, outcome.references)
        self._export(key, body, outcome)
        return None if outcome.converged else reconcile.retry_after(memory)

    def _export(self, key: controller.Key, body: Mapping[str, Any], outcome: reconcile.Outcome) -> None:
        """For the alert rules: the status conditions, the spec's per-queue targets, worker restarts."""
        self.metrics.set_conditions(*key, {c.type: c.status for c in outcome.status.conditions})
        with contextlib.suppress(ValueError):  # an invalid spec: the reconciler reports it
            self.metrics.set_spec(*key, models.JobQueueSpec.model_validate(body.get("spec") or {}))
        self.metrics.observe_worker_pods(*key, outcome.pods)

    def _tick(self, key: controller.Key, body: Mapping[str, Any]) -> float | None:
        memory = self._ticks.setdefault(key, scaling.Memory())
        was_up, was_folded = memory.broker_up, _folded(memory.written)
        with self.metrics.tick_seconds.time():
            scaling.tick(self.client, body, memory, self.metrics, self.node_reads)
        if was_up is not None and memory.broker_up != was_up:  # the broker came or went: BrokerReady follows now
            self.controller.poke(key, "reconcile", 0.0)
        elif _folded(memory.written) != was_folded:  # Ready follows, once the watch has brought the status back
            self.controller.poke(key, "reconcile", FOLDED_DELAY_SECONDS)
        return None

    def _forget(self, key: controller.Key) -> None:
        """A deleted JobQueue: its metric series and memories go with it."""
        self.metrics.forget(*key)
        self._reconciles.pop(key, None)
        self._ticks.pop(key, None)
