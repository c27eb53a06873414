"""The only module that talks to Redis: is a broker URL well formed, does the broker answer, and how deep
are a JobQueue's queues.

Reading depth follows kombu's Redis transport (docs/autoscaling.md, "Measurement"):
- a queue's waiting tasks are spread over one list per priority step: `<prefix><q>` for the first step,
  `<prefix><q>\\x06\\x16<step>` for the others; LPUSH adds at the head, the worker pops the tail, so the
  tail element is the oldest;
- a task delivered to a worker and not yet acked sits in the `<prefix>unacked` hash (delivery tag ->
  JSON `[message, exchange, routing_key]`), one hash for every queue of the database;
- the worker counts finished tasks and their run time in `<prefix>jobqueue:stats:<q>` (worker contract).
All of it is read in ONE pipeline per JobQueue. Building the commands and parsing the replies are pure
functions (`commands`, `parse`), so only `read_counts` does I/O.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import urlsplit

import redis

from jobqueue_worker import contract

SCHEMES: Final = ("redis", "rediss", "sentinel")
TIMEOUT_SECONDS: Final = 2.0

Command = tuple[str, ...]


class BrokerError(Exception):
    """The broker URL is malformed or the broker does not answer; the message never holds a password."""


class BrokerAuthError(BrokerError):
    """The broker answers but refuses the credentials (wrong password or user): fix the Secret, not the network."""


def _where(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or '?'}"


def first_address(url: str) -> str:
    """A redis:// or rediss:// URL to PING: the URL itself, or the first sentinel of a sentinel:// list."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise BrokerError(f"the broker URL must start with redis://, rediss:// or sentinel://, not {scheme or '?'}://")
    first = url.split(";")[0]
    if scheme == "sentinel":
        first = "redis" + first[len("sentinel") :]
    try:
        if urlsplit(first).hostname is None:
            raise BrokerError(f"the broker URL {_where(first)} names no host")
        urlsplit(first).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise BrokerError("the broker URL has an invalid port") from None
    return first


def ping(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """PING the broker (for sentinel://, the first sentinel); raises BrokerError when it does not answer."""
    address = first_address(url)
    connection = redis.Redis.from_url(address, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        connection.ping()
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise BrokerAuthError(f"{_where(address)} refuses the credentials in the broker URL: {exc}") from None
    except redis.ResponseError as exc:
        if _is_auth_refusal(exc):
            raise BrokerAuthError(f"{_where(address)} refuses the credentials in the broker URL: {exc}") from None
        raise BrokerError(f"{_where(address)} does not answer PING: {exc}") from None
    except redis.RedisError as exc:
        raise BrokerError(f"{_where(address)} does not answer PING: {exc}") from None
    finally:
        connection.close()


def _is_auth_refusal(exc: redis.ResponseError) -> bool:
    """NOAUTH (a password is needed), WRONGPASS (RESP3/ACL) or a refused AUTH, by Redis' error codes."""
    text = str(exc).upper()
    return text.startswith(("NOAUTH", "WRONGPASS", "NOPERM")) or "INVALID PASSWORD" in text


@dataclass(frozen=True, slots=True)
class QueueKeys:
    """Where one queue lives in Redis: its name and priority steps (kombu's `priority_steps`)."""

    name: str
    steps: tuple[int, ...] = contract.DEFAULT_PRIORITY_STEPS

    def lists(self, prefix: str = "") -> list[str]:
        """The list of every priority step, highest priority first (kombu's `_q_for_pri`: step 0 has no suffix)."""
        return contract.queue_lists(self.name, self.steps, prefix)


@dataclass(frozen=True, slots=True)
class QueueCounts:
    """One queue at one instant. Counters (`completed`, `run_seconds*`) only ever grow; rates come from
    their differences between ticks (`rates.py`)."""

    ready: int
    in_flight: int
    oldest_sent_at: float | None = None
    """Send time (epoch seconds) of the oldest waiting task that carries `jobqueue_sent_at`."""
    completed: int = 0
    run_seconds: float = 0.0
    run_seconds_sq: float = 0.0


def commands(queues: Sequence[QueueKeys], prefix: str = "") -> list[Command]:
    """The pipeline, in order: per queue LLEN and LINDEX -1 of each priority list and HMGET of its stats;
    then HVALS of the unacked hash once."""
    pipeline: list[Command] = []
    for queue in queues:
        lists = queue.lists(prefix)
        pipeline += [("LLEN", key) for key in lists]
        pipeline += [("LINDEX", key, "-1") for key in lists]
        pipeline.append(("HMGET", contract.stats_key(queue.name, prefix), *contract.STATS_FIELDS))
    pipeline.append(("HVALS", f"{prefix}{contract.UNACKED}"))
    return pipeline


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _number(value: Any) -> float:
    try:
        return float(_text(value)) if value is not None else 0.0
    except ValueError:
        return 0.0


def sent_at(raw: Any) -> float | None:
    """`jobqueue_sent_at` of one raw message (bytes of kombu's JSON envelope), or None."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        value = (message.get("headers") or {}).get(contract.SENT_AT_HEADER)
    except (ValueError, AttributeError):
        return None
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def routing_key(raw: Any) -> str | None:
    """The routing key of one unacked entry (`[message, exchange, routing_key]`), or None if unreadable."""
    try:
        entry = json.loads(raw)
    except ValueError:
        return None
    if isinstance(entry, list) and len(entry) == 3 and isinstance(entry[2], str):
        return entry[2]
    return None


def in_flight(unacked: Sequence[Any], names: Sequence[str]) -> dict[str, int]:
    """Unacked tasks per queue, attributed by routing key (Celery routes a queue's tasks with its name)."""
    counts = dict.fromkeys(names, 0)
    for raw in unacked:
        key = routing_key(raw)
        if key in counts:
            counts[key] += 1
    return counts


def parse(queues: Sequence[QueueKeys], replies: Sequence[Any]) -> dict[str, QueueCounts]:
    """QueueCounts per queue from the replies to `commands(queues)`, in the same order."""
    expected = sum(2 * len(q.steps) + 1 for q in queues) + 1
    if len(replies) != expected:
        raise BrokerError(f"expected {expected} replies from the pipeline, got {len(replies)}")
    flights = in_flight(replies[-1] or [], [q.name for q in queues])
    counts: dict[str, QueueCounts] = {}
    at = 0
    for queue in queues:
        n = len(queue.steps)
        lengths, tails, stats = replies[at : at + n], replies[at + n : at + 2 * n], replies[at + 2 * n]
        at += 2 * n + 1
        stamps = [stamp for stamp in (sent_at(tail) for tail in tails) if stamp is not None]
        completed, run_seconds, run_seconds_sq = (_number(v) for v in (stats or [None, None, None]))
        counts[queue.name] = QueueCounts(
            ready=sum(int(length or 0) for length in lengths),
            in_flight=flights[queue.name],
            oldest_sent_at=min(stamps) if stamps else None,
            completed=int(completed),
            run_seconds=run_seconds,
            run_seconds_sq=run_seconds_sq,
        )
    return counts


def read_counts(
    url: str, queues: Sequence[QueueKeys], prefix: str = "", timeout: float = TIMEOUT_SECONDS
) -> Mapping[str, QueueCounts]:
    """Read every queue of one JobQueue in one pipeline; raises BrokerError when Redis cannot be read.

    sentinel:// URLs are not measured (the master name is a transport option, not part of the URL)."""
    if urlsplit(url).scheme == "sentinel":
        raise BrokerError("measuring a sentinel:// broker is not supported")
    address = first_address(url)
    connection = redis.Redis.from_url(address, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        with connection.pipeline(transaction=False) as pipe:
            for command in commands(queues, prefix):
                pipe.execute_command(*command)  # type: ignore[no-untyped-call]
            replies = pipe.execute()
    except redis.RedisError as exc:
        raise BrokerError(f"{_where(address)} cannot be read: {exc}") from None
    finally:
        connection.close()
    return parse(queues, replies)
