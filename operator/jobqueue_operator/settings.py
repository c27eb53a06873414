"""The operator's own settings: command-line flags over JOBQUEUE_* environment variables over defaults,
read once at start (`__main__`) and handed to the handlers through kopf's memo."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobqueue_operator import election, nodes


class OperatorSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    resync_seconds: float = Field(30.0, gt=0)
    """How often every JobQueue is reconciled again, as a safety net (child changes trigger one at once)."""
    autoscale_seconds: float = Field(5.0, gt=0)
    """How often each JobQueue's queues are measured, exported and scaled."""
    metrics_port: int = Field(8081, ge=0, le=65535)
    """Port of the operator's /metrics (0: not served)."""
    metrics_address: str = "0.0.0.0"
    reconcile_threads: int = Field(8, ge=1)
    """JobQueues reconciled at once."""
    tick_threads: int = Field(32, ge=1)
    """JobQueues ticked at once: a tick waiting on a slow broker holds one of these, no more."""
    node_lease_grace_seconds: float = Field(nodes.DEFAULT_LEASE_GRACE_SECONDS, gt=0)
    """A node whose kubelet has not renewed its Lease for longer (capped at the Lease's own duration) is
    gone: its workers whose heartbeat lapsed get their tasks put back (nodes.py)."""
    leader_election: bool = True
    """Act only while holding the Lease (election.py); off: act at once, as the only operator (no Lease)."""
    lease_name: str = Field(election.DEFAULT_LEASE_NAME, min_length=1, max_length=253)
    """The Lease the replicas of one install compete for; operators of different installs need different ones."""
    lease_namespace: str = ""
    """Its namespace; empty: POD_NAMESPACE, else the first watched namespace, else `default` (election.py)."""
    lease_duration_seconds: int = Field(election.LEASE_DURATION_SECONDS, ge=1)
    """A standby takes the Lease this long after it last saw the leader renew it."""
    renew_deadline_seconds: float = Field(election.RENEW_DEADLINE_SECONDS, gt=0)
    """A leader that has not renewed for this long exits (the container restarts it as a standby)."""
    retry_period_seconds: float = Field(election.RETRY_PERIOD_SECONDS, ge=1)
    """How often the leader renews and a standby looks at the Lease."""

    @model_validator(mode="after")
    def _timings_agree(self) -> OperatorSettings:
        problem = election.timing_problem(
            self.lease_duration_seconds, self.renew_deadline_seconds, self.retry_period_seconds
        )
        if problem:
            raise ValueError(problem)
        return self

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> OperatorSettings:
        """The settings the JOBQUEUE_* variables give (the chart sets some; flags override them)."""
        env = os.environ if environ is None else environ
        names = {
            "resync_seconds": "JOBQUEUE_RESYNC_SECONDS",
            "autoscale_seconds": "JOBQUEUE_AUTOSCALE_SECONDS",
            "metrics_port": "JOBQUEUE_METRICS_PORT",
            "metrics_address": "JOBQUEUE_METRICS_ADDRESS",
            "reconcile_threads": "JOBQUEUE_MAX_WORKERS",
            "tick_threads": "JOBQUEUE_TICK_THREADS",
            "node_lease_grace_seconds": "JOBQUEUE_NODE_LEASE_GRACE_SECONDS",
            "leader_election": "JOBQUEUE_LEADER_ELECTION",
            "lease_name": "JOBQUEUE_LEASE_NAME",
            "lease_namespace": "JOBQUEUE_LEASE_NAMESPACE",
            "lease_duration_seconds": "JOBQUEUE_LEASE_DURATION_SECONDS",
            "renew_deadline_seconds": "JOBQUEUE_RENEW_DEADLINE_SECONDS",
            "retry_period_seconds": "JOBQUEUE_RETRY_PERIOD_SECONDS",
        }
        return cls.model_validate({field: env[name] for field, name in names.items() if env.get(name)})
