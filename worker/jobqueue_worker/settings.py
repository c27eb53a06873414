"""The worker's settings: the environment the operator sets (docs/worker-contract.md), validated once.

Everything else in the package takes a `WorkerSettings`, never `os.environ`, so a bad value is caught
at start with a message naming the variable instead of surfacing later as a Celery traceback.
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from typing import Annotated, Self

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from jobqueue_worker.contract import (
    DEFAULT_DEAD_LETTER_MAX_LENGTH,
    DEFAULT_MAX_WORKER_LOSSES,
    DEFAULT_PRIORITY_STEPS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    METRICS_PORT,
    Env,
)


class SettingsError(Exception):
    """The environment is not a valid worker configuration; the message is one line naming the variable."""


class Pool(enum.StrEnum):
    """Celery execution pools the worker accepts (`--pool`)."""

    PREFORK = "prefork"
    THREADS = "threads"
    SOLO = "solo"
    GEVENT = "gevent"
    EVENTLET = "eventlet"


def _split_steps(value: object) -> object:
    """`"0,3,6,9"` -> `["0", "3", "6", "9"]`; pydantic then checks each is an integer."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",")]
    return value


BROKER_SCHEMES = ("redis://", "rediss://", "sentinel://")
PrioritySteps = Annotated[tuple[Annotated[int, Field(ge=0, le=255)], ...], BeforeValidator(_split_steps)]
# Values never echoed back in error messages: URLs carry passwords.
_SECRET_VARIABLES = frozenset({Env.BROKER_URL, Env.RESULT_BACKEND})


class WorkerSettings(BaseModel):
    """One worker process's configuration; validation aliases are the environment variable names (contract.Env)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    app: str = Field(validation_alias=Env.APP, pattern=r"^[A-Za-z_][\w.]*(:[A-Za-z_][\w.]*)?$")
    name: str = Field("", validation_alias=Env.NAME)
    queue: str = Field(validation_alias=Env.QUEUE, pattern=r"^[^\s\x00-\x1f]+$")
    broker_url: str = Field(validation_alias=Env.BROKER_URL)
    broker_master_name: str | None = Field(None, validation_alias=Env.BROKER_MASTER_NAME, pattern=r"^\S+$")
    """The Sentinel master name for a sentinel:// broker (`app.master_name` says what applies when unset)."""
    result_backend: str | None = Field(None, validation_alias=Env.RESULT_BACKEND)
    result_expires_seconds: int = Field(86400, validation_alias=Env.RESULT_EXPIRES_SECONDS, ge=0)
    concurrency: int = Field(1, validation_alias=Env.CONCURRENCY, ge=1)
    pool: Pool = Field(Pool.PREFORK, validation_alias=Env.POOL)
    prefetch_multiplier: int = Field(1, validation_alias=Env.PREFETCH_MULTIPLIER, ge=1)
    max_tasks_per_child: int = Field(0, validation_alias=Env.MAX_TASKS_PER_CHILD, ge=0)
    max_memory_per_child_kb: int = Field(0, validation_alias=Env.MAX_MEMORY_PER_CHILD_KB, ge=0)
    soft_time_limit_seconds: float = Field(0, validation_alias=Env.SOFT_TIME_LIMIT_SECONDS, ge=0)
    time_limit_seconds: float = Field(0, validation_alias=Env.TIME_LIMIT_SECONDS, ge=0)
    visibility_timeout_seconds: int = Field(
        DEFAULT_VISIBILITY_TIMEOUT_SECONDS, validation_alias=Env.VISIBILITY_TIMEOUT_SECONDS, ge=1
    )
    priority_steps: PrioritySteps = Field(DEFAULT_PRIORITY_STEPS, validation_alias=Env.PRIORITY_STEPS, min_length=1)
    key_prefix: str = Field("", validation_alias=Env.KEY_PREFIX)
    soft_shutdown_timeout_seconds: float = Field(30, validation_alias=Env.SOFT_SHUTDOWN_TIMEOUT_SECONDS, ge=0)
    metrics_port: int = Field(METRICS_PORT, validation_alias=Env.METRICS_PORT, ge=1, le=65535)
    pod_name: str = Field("", validation_alias=Env.POD_NAME)
    pod_namespace: str = Field("", validation_alias=Env.POD_NAMESPACE)
    pod_uid: str = Field("", validation_alias=Env.POD_UID)
    dead_letter_enabled: bool = Field(True, validation_alias=Env.DEAD_LETTER_ENABLED)
    dead_letter_max_length: int = Field(
        DEFAULT_DEAD_LETTER_MAX_LENGTH, validation_alias=Env.DEAD_LETTER_MAX_LENGTH, ge=1
    )
    max_worker_losses: int = Field(DEFAULT_MAX_WORKER_LOSSES, validation_alias=Env.MAX_WORKER_LOSSES, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        """Cross-field rules; each message names the variables involved."""
        if not self.broker_url.startswith(BROKER_SCHEMES):
            raise ValueError(f"{Env.BROKER_URL} must start with one of {', '.join(BROKER_SCHEMES)}")
        if list(self.priority_steps) != sorted(set(self.priority_steps)):
            raise ValueError(f"{Env.PRIORITY_STEPS} must be distinct integers in ascending order, e.g. 0,3,6,9")
        hard, soft = self.time_limit_seconds, self.soft_time_limit_seconds
        if hard and soft and soft >= hard:
            raise ValueError(
                f"{Env.SOFT_TIME_LIMIT_SECONDS} ({soft:g}) must be less than {Env.TIME_LIMIT_SECONDS} ({hard:g})"
            )
        longest = hard or soft
        if longest and self.visibility_timeout_seconds <= longest:
            limit = Env.TIME_LIMIT_SECONDS if hard else Env.SOFT_TIME_LIMIT_SECONDS
            raise ValueError(
                f"{Env.VISIBILITY_TIMEOUT_SECONDS} ({self.visibility_timeout_seconds}) must be greater than "
                f"{limit} ({longest:g}), or Redis redelivers tasks that are still running"
            )
        return self

    @property
    def result_backend_url(self) -> str:
        """The JobQueue's result backend: its own URL if given, else the broker's Redis (for apps without one)."""
        return self.result_backend or self.broker_url

    @property
    def nodename(self) -> str:
        """Celery's `-n`: the queue and the Pod, so `celery inspect` output says which Pod is which."""
        return f"{self.queue}@{self.pod_name or socket.gethostname()}"


def load_settings(environ: Mapping[str, str]) -> WorkerSettings:
    """Validate the environment; raise SettingsError with one line per the contract otherwise.

    Empty values count as unset, so an operator can always render every variable.
    """
    present = {key: value for key, value in environ.items() if value != ""}
    try:
        return WorkerSettings.model_validate(present)
    except ValidationError as exc:
        raise SettingsError("; ".join(_describe(error) for error in exc.errors())) from None


def _describe(error: Mapping[str, object]) -> str:
    """One pydantic error as `VARIABLE=value: what is wrong` (never echoing secrets)."""
    location = error.get("loc") or ()
    variable = str(location[0]) if isinstance(location, tuple) and location else ""
    message = str(error.get("msg", "")).removeprefix("Value error, ")
    if not variable:
        return message
    if error.get("type") == "missing":
        return f"{variable} is required"
    if variable in _SECRET_VARIABLES:
        return f"{variable}: {message}"
    return f"{variable}={error.get('input')!r}: {message}"
