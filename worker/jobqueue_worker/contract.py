"""The contract between the operator and the worker, written once: both packages import it.

Dependency-free on purpose (standard library only): the operator's image has no Celery, and nothing
here may pull it in. docs/worker-contract.md describes every name below; change both together.
"""

from __future__ import annotations

import enum
import json
import shlex
import time
import uuid
from bisect import bisect
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

INIT_COMMAND: Final = ("dumb-init", "--single-child", "--")
"""PID 1 of the worker and beat containers (dumb-init, a dependency of the `worker` extra), before the real
command. The kernel drops a signal to a namespace's PID 1 that has no handler for it, and Python installs
none for SIGTERM until the entry point runs: a Pod deleted while its container started (the kubelet stops it
right after it starts) kept running until its grace period ended, minutes. dumb-init blocks every signal at
once and passes SIGTERM to its one child, which, not being PID 1, is ended by it until Celery's handler is in.
`--single-child`: the pool's processes are not signalled (Celery's warm shutdown is the main process's)."""
WORKER_COMMAND: Final = (*INIT_COMMAND, "jobqueue-worker")
"""The worker container's command (docs/worker-contract.md, "Process")."""

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
SENTINEL_MASTER_NAME: Final = "jobqueue"
"""The name Redis Sentinel monitors the broker's master under (`sentinel monitor <name> ...`): the managed
broker's Sentinels, the workers (kombu's `master_name`, unless JOBQUEUE_BROKER_MASTER_NAME says otherwise), the
operator and the devenv's SentinelGroup all use this one."""


class Env:
    """Names of the environment variables the operator sets and the worker reads."""

    APP: Final = "JOBQUEUE_APP"
    NAME: Final = "JOBQUEUE_NAME"
    QUEUE: Final = "JOBQUEUE_QUEUE"
    BROKER_URL: Final = "JOBQUEUE_BROKER_URL"
    BROKER_MASTER_NAME: Final = "JOBQUEUE_BROKER_MASTER_NAME"
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
    POD_UID: Final = "POD_UID"
    DEAD_LETTER_ENABLED: Final = "JOBQUEUE_DEAD_LETTER_ENABLED"
    DEAD_LETTER_MAX_LENGTH: Final = "JOBQUEUE_DEAD_LETTER_MAX_LENGTH"
    MAX_WORKER_LOSSES: Final = "JOBQUEUE_MAX_WORKER_LOSSES"


def redacted(url: str) -> str:
    """A broker URL without credentials, path or query, for messages: `scheme://host:port`."""
    parts = urlsplit(url.split(";")[0])
    try:
        port = parts.port
    except ValueError:
        port = None
    return f"{parts.scheme or '?'}://{parts.hostname or '?'}:{port or '?'}"


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
BINDINGS_PREFIX: Final = "_kombu.binding."
"""kombu's binding table of an exchange, `_kombu.binding.<exchange>`: a set of `routing key, pattern, queue`
joined by PRIORITY_SEPARATOR."""
UNACKED_MUTEX: Final = "unacked_mutex"
"""kombu's lock around its visibility-timeout sweep."""
REPLY_SUFFIX: Final = ".reply.celery.pidbox"
"""Celery's remote-control reply queues (`<id>.reply.celery.pidbox`): replies, not tasks."""
OWN_PREFIX: Final = "jobqueue:"
"""Every key of our own (stats, workers, losses, dead letters) starts with it."""
RESERVED_QUEUE_NAMES: Final = (UNACKED, UNACKED_INDEX, UNACKED_MUTEX)
RESERVED_QUEUE_PREFIXES: Final = ("_kombu.", OWN_PREFIX)
RESERVED_QUEUE_SUFFIXES: Final = (REPLY_SUFFIX,)
"""A queue's list is the Redis key of its name: names that are, or may be, keys kombu, Celery or we keep
for ourselves are not queues (the schema refuses them; the search for unserved queues skips them)."""

STATS_PREFIX: Final = "jobqueue:stats:"
"""`<prefix>jobqueue:stats:<queue>`: the hash of finished attempts the worker adds to."""
STATS_FIELDS: Final = ("completed", "run_seconds", "run_seconds_sq")


def stats_key(queue: str, prefix: str = "") -> str:
    return f"{prefix}{STATS_PREFIX}{queue}"


def queue_lists(queue: str, steps: Sequence[int] = DEFAULT_PRIORITY_STEPS, prefix: str = "") -> list[str]:
    """The list of every priority step, highest priority first (kombu's `_q_for_pri`: step 0 has no suffix)."""
    return [f"{prefix}{queue}{PRIORITY_SEPARATOR}{step}" if step else f"{prefix}{queue}" for step in steps]


def list_for_priority(queue: str, priority: int, steps: Sequence[int], prefix: str = "") -> str:
    """The list a message of `priority` (0..9, as sent) goes to: kombu's `_q_for_pri(queue, priority(n))`."""
    step = steps[bisect(steps, priority) - 1]
    return f"{prefix}{queue}{PRIORITY_SEPARATOR}{step}" if step else f"{prefix}{queue}"


def message_priority(message: Mapping[str, Any]) -> int:
    """A kombu message's priority as its transport reads it: `properties.priority` within 0..9, else 0."""
    try:
        return max(min(int(message["properties"]["priority"]), 9), 0)
    except (TypeError, ValueError, KeyError):
        return 0


# Prompt redelivery: each worker process incarnation (one start of `jobqueue-worker` in a Pod) registers
# itself, keeps a heartbeat, and records the delivery tags it holds, so that once its Pod is gone for
# good the operator can put exactly those messages back at once instead of after the visibility timeout.

WORKERS: Final = "jobqueue:workers"
"""Hash: incarnation id -> JSON `Registration`, one hash for the whole database (like kombu's `unacked`)."""
HEARTBEAT_INTERVAL_SECONDS: Final = 2.0
HEARTBEAT_TTL_SECONDS: Final = 10
"""The heartbeat key expires this long after the last beat: an incarnation without it is not running."""
LOSSES_PREFIX: Final = "jobqueue:losses:"
"""`<prefix>jobqueue:losses:<queue>`: hash task id -> how many times a worker was lost while holding it."""
LOSSES_TTL_SECONDS: Final = 7 * 24 * 3600
"""Refreshed on every loss: counts of tasks that never come back are forgotten after a week."""


def alive_key(instance: str, prefix: str = "") -> str:
    """String key with a TTL, refreshed every heartbeat while the incarnation runs."""
    return f"{prefix}jobqueue:worker:{instance}:alive"


def result_backend_key(instance: str, prefix: str = "") -> str:
    """String key, written with the heartbeat (same TTL) while the incarnation cannot reach its result
    backend: what is wrong and the fix, one line (`jobqueue_worker.resultcheck`); absent when it can."""
    return f"{prefix}jobqueue:worker:{instance}:result-backend"


def held_key(instance: str, prefix: str = "") -> str:
    """Hash of the delivery tags the incarnation holds -> their delivery time, the same value as their
    `unacked_index` score (added with kombu's unacked entry, removed with it)."""
    return f"{prefix}jobqueue:worker:{instance}:held"


def losses_key(queue: str, prefix: str = "") -> str:
    return f"{prefix}{LOSSES_PREFIX}{queue}"


@dataclass(frozen=True, slots=True)
class Registration:
    """What one incarnation says about itself in `WORKERS`."""

    instance: str
    """Random id of this process start: a restarted container is a new incarnation of the same Pod."""
    queue: str
    pod: str
    """Pod name (`POD_NAME`), or the host name outside Kubernetes."""
    pod_uid: str
    """`metadata.uid` of the Pod (`POD_UID`); empty outside Kubernetes."""
    namespace: str
    started_at: float
    """Seconds since the epoch."""
    priority_steps: tuple[int, ...] = DEFAULT_PRIORITY_STEPS
    pid: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Registration:
        """Raises ValueError on anything that is not a registration this version can read."""
        try:
            data = json.loads(text)
            data["priority_steps"] = tuple(int(step) for step in data.get("priority_steps", DEFAULT_PRIORITY_STEPS))
            known = {name: data[name] for name in cls.__dataclass_fields__ if name in data}
            return cls(**known)
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a worker registration: {exc}") from None


# Dead letters: a message the worker will not run is kept, with why, in a bounded list per queue.

DEAD_LETTER_PREFIX: Final = "jobqueue:deadletter:"
"""`<prefix>jobqueue:deadletter:<queue>`: list of JSON `DeadLetter`, newest first (LPUSH, then LTRIM)."""
DEFAULT_DEAD_LETTER_MAX_LENGTH: Final = 10000
DEFAULT_MAX_WORKER_LOSSES: Final = 3


def dead_letter_key(queue: str, prefix: str = "") -> str:
    return f"{prefix}{DEAD_LETTER_PREFIX}{queue}"


class DeadLetterReason(enum.StrEnum):
    FAILED = "failed"
    """The task raised and will not be retried (no retries, or retries exhausted)."""
    TIME_LIMIT = "time-limit"
    """The task ran past its hard time limit and was killed."""
    WORKER_LOST = "worker-lost"
    """A worker process was lost while running it (killed, out of memory) as many times as allowed."""
    UNDECODABLE = "undecodable"
    """The message body cannot be decoded."""
    REFUSED_CONTENT = "refused-content"
    """The message uses a serializer the worker refuses (anything but JSON, e.g. pickle)."""
    UNKNOWN_TASK = "unknown-task"
    """No task of that name is registered in the worker's app."""
    UNKNOWN_MESSAGE = "unknown-message"
    """Not a Celery task message."""
    INVALID_TASK = "invalid-task"
    """A task message Celery cannot turn into a request."""
    RESULT_NOT_STORED = "result-not-stored"
    """The task ran and returned, but its result could not be stored (result backend unreachable, value
    refused): its side effects happened, so a requeue runs them again."""


RAN_REASONS: Final = frozenset({DeadLetterReason.RESULT_NOT_STORED})
"""Dead letters of tasks whose body completed: requeueing one runs its side effects a second time."""


REDELIVERED: Final = "redelivered"
"""The mark kombu's restore adds to `headers` and `properties.delivery_info` of a message it puts back."""


def as_sent(message: Mapping[str, Any]) -> dict[str, Any]:
    """A kombu message envelope without the marks kombu's restores add: the message as it was sent."""
    copy = json.loads(json.dumps(message))
    headers = copy.get("headers")
    if isinstance(headers, dict) and headers.get(REDELIVERED) is True:
        del headers[REDELIVERED]
    properties = copy.get("properties")
    delivery = properties.get("delivery_info") if isinstance(properties, dict) else None
    if isinstance(delivery, dict):
        delivery.pop(REDELIVERED, None)
    return dict(copy)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """One entry of a queue's dead-letter list."""

    reason: DeadLetterReason
    message: dict[str, Any]
    """The original kombu envelope (`body`, `headers`, `properties`, ...), as it was sent."""
    queue: str
    exception: str = ""
    """`Type: text` of what went wrong."""
    traceback: str = ""
    task: str = ""
    task_id: str = ""
    worker: str = ""
    """The Celery node name of the worker that gave up on it (`<queue>@<pod>`)."""
    at: float = field(default_factory=time.time)
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    """This dead letter's own id (a task can be dead-lettered more than once)."""

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> DeadLetter:
        """Raises ValueError on anything that is not a dead letter this version can read."""
        try:
            data = json.loads(text)
            data["reason"] = DeadLetterReason(data["reason"])
            if not isinstance(data.get("message"), dict):
                raise ValueError("no message")
            return cls(**{name: data[name] for name in cls.__dataclass_fields__ if name in data})
        except (TypeError, KeyError, AttributeError, ValueError) as exc:
            raise ValueError(f"not a dead letter: {exc}") from None


def purge_command(queue: str) -> str:
    """The command that drops a queue's waiting tasks (run in any worker Pod), as the operator's messages name it
    (the name shell-quoted: a queue name may hold any printable character)."""
    return f"jobqueue-worker queue purge --queue {shlex.quote(queue)} --yes"
