"""The contract between the operator and the worker, written once: both packages import it.

Dependency-free on purpose (standard library only): the operator's image has no Celery, and nothing
here may pull it in. docs/worker-contract.md describes every name below; change both together.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

METRICS_PORT: Final = 9808
"""The worker Pod's one HTTP port (container port name `metrics`): /metrics, /healthz, /readyz."""
METRICS_PORT_NAME: Final = "metrics"

DEFAULT_PRIORITY_STEPS: Final = (0, 3, 6, 9)
"""kombu's default Redis priority steps, and what four priority levels give."""
DEFAULT_VISIBILITY_TIMEOUT_SECONDS: Final = 3600
"""kombu's default; the operator raises it above a queue's time limit."""

ACTIVE_TASKS_METRIC: Final = "jobqueue_worker_active_tasks"
"""The worker's gauge of tasks running now; the operator scrapes it to tell busy Pods from idle ones."""
SENT_AT_HEADER: Final = "jobqueue_sent_at"
"""Message header with the send time (seconds since the epoch), stamped by `jobqueue_worker.sent_time`."""


class Env:
    """Names of the environment variables the operator sets and the worker reads."""

    APP: Final = "JOBQUEUE_APP"
    NAME: Final = "JOBQUEUE_NAME"
    QUEUE: Final = "JOBQUEUE_QUEUE"
    BROKER_URL: Final = "JOBQUEUE_BROKER_URL"
    RESULT_BACKEND: Final = "JOBQUEUE_RESULT_BACKEND"
    RESULT_EXPIRES_SECONDS: Final = "JOBQUEUE_RESULT_EXPIRES_SECONDS"
    CONCURRENCY: Final = "JOBQUEUE_CONCURRENCY"
    POOL: Final = "JOBQUEUE_POOL"
    PREFETCH_MULTIPLIER: Final = "JOBQUEUE_PREFETCH_MULTIPLIER"
    MAX_TASKS_PER_CHILD: Final = "JOBQUEUE_MAX_TASKS_PER_CHILD"
    MAX_MEMORY_PER_CHILD_KB: Final = "JOBQUEUE_MAX_MEMORY_PER_CHILD_KB"
    SOFT_TIME_LIMIT_SECONDS: Final = "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS"
    TIME_LIMIT_SECONDS: Final = "JOBQUEUE_TIME_LIMIT_SECONDS"
    VISIBILITY_TIMEOUT_SECONDS: Final = "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS"
    PRIORITY_STEPS: Final = "JOBQUEUE_PRIORITY_STEPS"
    KEY_PREFIX: Final = "JOBQUEUE_KEY_PREFIX"
    SOFT_SHUTDOWN_TIMEOUT_SECONDS: Final = "JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS"
    METRICS_PORT: Final = "JOBQUEUE_METRICS_PORT"
    POD_NAME: Final = "POD_NAME"
    POD_NAMESPACE: Final = "POD_NAMESPACE"


def priority_steps(levels: int) -> list[int]:
    """Redis priority steps spread over 0..9: 4 levels give 0, 3, 6, 9 (kombu's default)."""
    if levels == 1:
        return [0]
    return [round(i * 9 / (levels - 1)) for i in range(levels)]


# Where things live in the broker. Every key takes the JobQueue's key prefix (kombu's `global_keyprefix`)
# in front; the names below are without it.

PRIORITY_SEPARATOR: Final = "\x06\x16"
"""kombu's `Channel.sep`: a queue's list for priority step `s > 0` is `<queue>\\x06\\x16<s>`."""
UNACKED: Final = "unacked"
"""kombu's hash of delivered, unacknowledged messages: delivery tag -> JSON [message, exchange, routing key]."""
UNACKED_INDEX: Final = "unacked_index"
"""kombu's sorted set of the same delivery tags, scored by delivery time (its visibility-timeout sweep)."""

STATS_PREFIX: Final = "jobqueue:stats:"
"""`<prefix>jobqueue:stats:<queue>`: the hash of finished attempts the worker adds to."""
STATS_FIELDS: Final = ("completed", "run_seconds", "run_seconds_sq")


def stats_key(queue: str, prefix: str = "") -> str:
    return f"{prefix}{STATS_PREFIX}{queue}"


def queue_lists(queue: str, steps: Sequence[int] = DEFAULT_PRIORITY_STEPS, prefix: str = "") -> list[str]:
    """The list of every priority step, highest priority first (kombu's `_q_for_pri`: step 0 has no suffix)."""
    return [f"{prefix}{queue}{PRIORITY_SEPARATOR}{step}" if step else f"{prefix}{queue}" for step in steps]
