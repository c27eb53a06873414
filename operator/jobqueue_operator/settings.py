"""The operator's own settings: command-line flags over JOBQUEUE_* environment variables over defaults,
read once at start (`__main__`) and handed to the handlers through kopf's memo."""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field


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
        }
        return cls.model_validate({field: env[name] for field, name in names.items() if env.get(name)})
