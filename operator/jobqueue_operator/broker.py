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

import contextlib
import enum
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import urlsplit

import redis

from jobqueue_worker import contract

SCHEMES: Final = ("redis", "rediss", "sentinel")
TIMEOUT_SECONDS: Final = 2.0

Command = tuple[str, ...]


class BrokerError(Exception):
    """The broker URL is malformed or the broker does not answer; the message never holds a password."""


_where = contract.redacted


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
    except redis.RedisError as exc:
        raise BrokerError(f"{_where(address)} does not answer PING: {exc}") from None
    finally:
        connection.close()


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
    dead_letters: int = 0
    """Entries of the queue's dead-letter list (`<prefix>jobqueue:deadletter:<q>`)."""


def commands(queues: Sequence[QueueKeys], prefix: str = "") -> list[Command]:
    """The pipeline, in order: per queue LLEN and LINDEX -1 of each priority list, HMGET of its stats and
    LLEN of its dead-letter list; then HVALS of the unacked hash once."""
    pipeline: list[Command] = []
    for queue in queues:
        lists = queue.lists(prefix)
        pipeline += [("LLEN", key) for key in lists]
        pipeline += [("LINDEX", key, "-1") for key in lists]
        pipeline.append(("HMGET", contract.stats_key(queue.name, prefix), *contract.STATS_FIELDS))
        pipeline.append(("LLEN", contract.dead_letter_key(queue.name, prefix)))
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
    expected = sum(2 * len(q.steps) + 2 for q in queues) + 1
    if len(replies) != expected:
        raise BrokerError(f"expected {expected} replies from the pipeline, got {len(replies)}")
    flights = in_flight(replies[-1] or [], [q.name for q in queues])
    counts: dict[str, QueueCounts] = {}
    at = 0
    for queue in queues:
        n = len(queue.steps)
        lengths, tails, stats = replies[at : at + n], replies[at + n : at + 2 * n], replies[at + 2 * n]
        dead_letters = replies[at + 2 * n + 1]
        at += 2 * n + 2
        stamps = [stamp for stamp in (sent_at(tail) for tail in tails) if stamp is not None]
        completed, run_seconds, run_seconds_sq = (_number(v) for v in (stats or [None, None, None]))
        counts[queue.name] = QueueCounts(
            ready=sum(int(length or 0) for length in lengths),
            in_flight=flights[queue.name],
            oldest_sent_at=min(stamps) if stamps else None,
            completed=int(completed),
            run_seconds=run_seconds,
            run_seconds_sq=run_seconds_sq,
            dead_letters=int(dead_letters or 0),
        )
    return counts


def read_counts(
    url: str, queues: Sequence[QueueKeys], prefix: str = "", timeout: float = TIMEOUT_SECONDS
) -> Mapping[str, QueueCounts]:
    """Read every queue of one JobQueue in one pipeline; raises BrokerError when Redis cannot be read.

    sentinel:// URLs are not measured (the master name is a transport option, not part of the URL)."""
    with connected(url, timeout, "measuring") as client:
        replies = run(client, commands(queues, prefix))
    return parse(queues, replies)


@contextlib.contextmanager
def connected(url: str, timeout: float = TIMEOUT_SECONDS, purpose: str = "reading") -> Iterator[redis.Redis]:
    """A client for one block of commands; any Redis failure inside becomes a BrokerError.

    sentinel:// URLs are refused (the master name is a transport option, not part of the URL)."""
    if urlsplit(url).scheme == "sentinel":
        raise BrokerError(f"{purpose} a sentinel:// broker is not supported")
    address = first_address(url)
    client = redis.Redis.from_url(address, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        yield client
    except redis.RedisError as exc:
        raise BrokerError(f"{_where(address)} cannot be read: {exc}") from None
    finally:
        client.close()


def run(client: redis.Redis, pipeline: Sequence[Command]) -> list[Any]:
    """Send commands in one round trip (no MULTI); the replies in order."""
    with client.pipeline(transaction=False) as pipe:
        for command in pipeline:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return list(pipe.execute())


# Prompt redelivery (docs/worker-contract.md, "Prompt redelivery"). Each worker process incarnation
# registers itself in `<prefix>jobqueue:workers`, keeps `<prefix>jobqueue:worker:<id>:alive` alive and lists
# the delivery tags it holds in `<prefix>jobqueue:worker:<id>:held`. Once the operator knows an
# incarnation's Pod is gone for good, `restore_incarnation` puts exactly its messages back, as kombu's own
# restore would, in one Lua script.


@dataclass(frozen=True, slots=True)
class Incarnation:
    """One registered worker process, as the broker has it."""

    registration: contract.Registration
    alive: bool
    """Its heartbeat key exists: it wrote one within the last HEARTBEAT_TTL_SECONDS."""
    held: int
    """Delivery tags in its held hash: at most this many messages would be restored."""


def registry_commands(prefix: str = "") -> list[Command]:
    return [("HGETALL", prefix + contract.WORKERS)]


def parse_registry(reply: Any) -> list[contract.Registration]:
    """The readable registrations of an HGETALL reply, oldest first (an unreadable entry is left out)."""
    found = []
    for raw in (reply or {}).values():
        try:
            found.append(contract.Registration.from_json(raw))
        except ValueError:
            continue
    return sorted(found, key=lambda registration: (registration.started_at, registration.instance))


def liveness_commands(registrations: Sequence[contract.Registration], prefix: str = "") -> list[Command]:
    """Per registration: EXISTS of its heartbeat, HLEN of its held hash."""
    pipeline: list[Command] = []
    for registration in registrations:
        pipeline += [
            ("EXISTS", contract.alive_key(registration.instance, prefix)),
            ("HLEN", contract.held_key(registration.instance, prefix)),
        ]
    return pipeline


def parse_liveness(registrations: Sequence[contract.Registration], replies: Sequence[Any]) -> list[Incarnation]:
    return [
        Incarnation(registration, bool(int(replies[2 * i] or 0)), int(replies[2 * i + 1] or 0))
        for i, registration in enumerate(registrations)
    ]


def list_incarnations(
    url: str, prefix: str = "", queues: Collection[str] | None = None, timeout: float = TIMEOUT_SECONDS
) -> list[Incarnation]:
    """Every registered worker incarnation (of `queues` only, if given) with its heartbeat state.

    Two round trips whatever the number of workers. Raises BrokerError when Redis cannot be read."""
    with connected(url, timeout) as client:
        registrations = parse_registry(run(client, registry_commands(prefix))[0])
        if queues is not None:
            registrations = [registration for registration in registrations if registration.queue in queues]
        replies = run(client, liveness_commands(registrations, prefix)) if registrations else []
    return parse_liveness(registrations, replies)


@dataclass(frozen=True, slots=True)
class Binding:
    """One member of kombu's binding table of an exchange: routing key, pattern and queue."""

    routing_key: str
    pattern: str
    queue: str

    @classmethod
    def parse(cls, member: Any) -> Binding | None:
        parts = _text(member).split(contract.PRIORITY_SEPARATOR)
        return cls(*parts) if len(parts) == 3 else None


def parse_bindings(members: Any) -> list[Binding]:
    return [binding for binding in (Binding.parse(member) for member in members or ()) if binding is not None]


def binding_key(exchange: str, prefix: str = "") -> str:
    return f"{prefix}{contract.BINDINGS_PREFIX}{exchange}"


def lookup(exchange: str, routing_key: str, table: Sequence[Binding], fallback: str) -> list[str]:
    """The queues a message returns to: kombu's `Channel._lookup` for direct and topic bindings.

    The anonymous exchange routes by routing key (how Celery sends to a direct queue). A pattern is
    only written for topic exchanges, and is then matched as a regular expression, as kombu does. Where
    kombu would find no queue (a binding table gone) and drop the message, it goes back to `fallback`,
    the queue the worker consumed."""
    if not exchange:
        return [routing_key or fallback]
    queues = {
        binding.queue
        for binding in table
        if (re.match(binding.pattern, routing_key) if binding.pattern else binding.routing_key == routing_key)
    }
    return sorted(queues) or [fallback]


@dataclass(frozen=True, slots=True)
class Redelivery:
    """One held message, ready to go back: its new payload and the lists and loss counters it goes to."""

    tag: str
    payload: str
    task_id: str
    queues: tuple[str, ...]
    lists: tuple[str, ...]
    """Per queue, the list of the message's priority step (`contract.list_for_priority`)."""


def redelivery(
    tag: str,
    entry: Any,
    registration: contract.Registration,
    tables: Mapping[str, Sequence[Binding]],
    prefix: str = "",
) -> Redelivery | None:
    """What kombu's `QoS.restore_by_tag` would push for one unacked entry (JSON [message, exchange,
    routing key]): the message marked redelivered (`_do_restore_message`), on the list of its priority
    step. None for an entry that does not decode: it is left where it is, for kombu's own sweep."""
    try:
        message, exchange, routing_key = json.loads(entry)
    except (TypeError, ValueError):
        return None
    if not isinstance(message, dict) or not isinstance(exchange, str) or not isinstance(routing_key, str):
        return None
    try:  # the same two marks in the same order as kombu; a message without them goes back unmarked
        message["headers"]["redelivered"] = True
        message["properties"]["delivery_info"]["redelivered"] = True
    except (KeyError, TypeError):
        pass
    queues = lookup(exchange, routing_key, tables.get(exchange, ()), registration.queue)
    priority = contract.message_priority(message)
    steps = registration.priority_steps
    return Redelivery(
        tag=tag,
        payload=json.dumps(message),
        task_id=task_id(message),
        queues=tuple(queues),
        lists=tuple(contract.list_for_priority(queue, priority, steps, prefix) for queue in queues),
    )


def task_id(message: Mapping[str, Any]) -> str:
    """The stable id of a Celery task message: its `id` header (protocol 2), else its correlation id."""
    headers = message.get("headers") if isinstance(message.get("headers"), dict) else {}
    properties = message.get("properties") if isinstance(message.get("properties"), dict) else {}
    value = (headers or {}).get("id") or (properties or {}).get("correlation_id") or ""
    return str(value)


RESTORE_SCRIPT: Final = """
-- KEYS: 1 unacked, 2 unacked_index, 3 held hash, 4 registry, 5 heartbeat, 6.. lists and loss hashes.
-- ARGV: 1 incarnation id, 2 loss-hash TTL, 3 number of messages, then per message:
--   tag, payload, task id, n, and n times: list key index, loss hash key index, queue name.
if redis.call('EXISTS', KEYS[5]) == 1 then return {'alive'} end
local messages, planned, at = {}, {}, 4
for i = 1, tonumber(ARGV[3]) do
  local m = {tag = ARGV[at], payload = ARGV[at + 1], task = ARGV[at + 2], to = {}}
  local n = tonumber(ARGV[at + 3])
  at = at + 4
  for j = 1, n do
    m.to[j] = {list = tonumber(ARGV[at]), losses = tonumber(ARGV[at + 1]), queue = ARGV[at + 2]}
    at = at + 3
  end
  planned[m.tag] = true
  messages[i] = m
end
-- Still this incarnation's: unacked, and delivered at the time it recorded (a tag is kept across
-- redeliveries, so another worker may hold it now under a later delivery time).
local function owned(tag, delivered)
  local score = redis.call('ZSCORE', KEYS[2], tag)
  return score and tonumber(score) == tonumber(delivered) and redis.call('HEXISTS', KEYS[1], tag) == 1
end
local held = {}
local members = redis.call('HGETALL', KEYS[3])
for i = 1, #members, 2 do
  held[members[i]] = members[i + 1]
  if not planned[members[i]] and owned(members[i], members[i + 1]) then return {'changed'} end
end
local counts, order = {}, {}
for _, m in ipairs(messages) do
  if #m.to > 0 and held[m.tag] and owned(m.tag, held[m.tag]) then
    for _, to in ipairs(m.to) do
      redis.call('RPUSH', KEYS[to.list], m.payload)
      if m.task ~= '' then
        redis.call('HINCRBY', KEYS[to.losses], m.task, 1)
        redis.call('EXPIRE', KEYS[to.losses], tonumber(ARGV[2]))
      end
      if not counts[to.queue] then counts[to.queue] = 0; table.insert(order, to.queue) end
      counts[to.queue] = counts[to.queue] + 1
    end
    redis.call('HDEL', KEYS[1], m.tag)
    redis.call('ZREM', KEYS[2], m.tag)
  end
end
redis.call('DEL', KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
local reply = {'restored'}
for _, queue in ipairs(order) do table.insert(reply, queue); table.insert(reply, counts[queue]) end
return reply
"""
"""Atomic: the heartbeat check, the check that the held hash lists nothing unplanned, and every move.
A message acked in the meantime is no longer in `unacked` and is skipped; kombu's own visibility
sweep (WATCH on `unacked`) then finds nothing to restore either, so nothing is put back twice; a message
another worker holds now (same tag, later delivery time) is left to it."""


def restore_arguments(
    instance: str, redeliveries: Sequence[Redelivery], prefix: str = ""
) -> tuple[list[str], list[str | int]]:
    """KEYS and ARGV of RESTORE_SCRIPT for the planned messages (each key once)."""
    keys = [
        prefix + contract.UNACKED,
        prefix + contract.UNACKED_INDEX,
        contract.held_key(instance, prefix),
        prefix + contract.WORKERS,
        contract.alive_key(instance, prefix),
    ]
    index: dict[str, int] = {}

    def key(name: str) -> int:
        if name not in index:
            keys.append(name)
            index[name] = len(keys)  # Lua's KEYS is 1-based
        return index[name]

    args: list[str | int] = [instance, contract.LOSSES_TTL_SECONDS, len(redeliveries)]
    for message in redeliveries:
        args += [message.tag, message.payload, message.task_id, len(message.queues)]
        for queue, name in zip(message.queues, message.lists, strict=True):
            args += [key(name), key(contract.losses_key(queue, prefix)), queue]
    return keys, args


class RestoreOutcome(enum.StrEnum):
    RESTORED = "restored"
    """The messages still unacked went back; the held hash and the registration are gone."""
    ALIVE = "alive"
    """Its heartbeat is alive: nothing was touched."""
    UNKNOWN = "unknown"
    """No such registration (already restored, or it exited cleanly): nothing to do."""


@dataclass(frozen=True, slots=True)
class Restore:
    outcome: RestoreOutcome
    restored: Mapping[str, int] = field(default_factory=dict)
    """Messages put back, per queue."""
    left: int = 0
    """Held entries that do not decode, left in `unacked` for kombu's visibility sweep."""

    @property
    def total(self) -> int:
        return sum(self.restored.values())


def parse_restore(reply: Sequence[Any], left: int = 0) -> Restore | None:
    """The script's reply; None when the held hash changed under the plan (read again and retry)."""
    status = _text(reply[0]) if reply else ""
    if status == "alive":
        return Restore(RestoreOutcome.ALIVE)
    if status == "changed":
        return None
    if status != "restored":
        raise BrokerError(f"unexpected reply from the restore script: {status!r}")
    pairs = reply[1:]
    return Restore(RestoreOutcome.RESTORED, {_text(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}, left)


RESTORE_ATTEMPTS: Final = 3


def restore_incarnation(url: str, instance: str, prefix: str = "", timeout: float = TIMEOUT_SECONDS) -> Restore:
    """Put one dead incarnation's held messages back on their queues, atomically, and forget it.

    Call it only for an incarnation whose Pod is gone for good (deleted, or its container terminated and
    not restarting in place); a heartbeat still alive is refused inside the script (`ALIVE`). Each
    restored message counts one worker loss for its task id in `<prefix>jobqueue:losses:<queue>` (the
    worker dead-letters a task lost too often). Raises BrokerError when Redis cannot be read."""
    with connected(url, timeout, "restoring") as client:
        script = client.register_script(RESTORE_SCRIPT)
        for _ in range(RESTORE_ATTEMPTS):
            raw, alive, members = run(
                client,
                [
                    ("HGET", prefix + contract.WORKERS, instance),
                    ("EXISTS", contract.alive_key(instance, prefix)),
                    ("HKEYS", contract.held_key(instance, prefix)),
                ],
            )
            if int(alive or 0):
                return Restore(RestoreOutcome.ALIVE)
            if raw is None:
                return Restore(RestoreOutcome.UNKNOWN)
            try:
                registration = contract.Registration.from_json(raw)
            except ValueError as exc:
                raise BrokerError(f"worker {instance}: {exc}") from None
            tags = sorted(_text(member) for member in members or ())
            messages, left = _plan(client, registration, tags, prefix)
            keys, args = restore_arguments(instance, messages, prefix)
            result = parse_restore(script(keys=keys, args=args, client=client), left)
            if result is not None:
                return result
    raise BrokerError(f"worker {instance}: its held messages kept changing during {RESTORE_ATTEMPTS} restores")


def _plan(
    client: redis.Redis, registration: contract.Registration, tags: Sequence[str], prefix: str
) -> tuple[list[Redelivery], int]:
    """Read the held entries and the binding tables they route through; plan each message's way back.

    An entry gone from `unacked` (acked, or restored by kombu's sweep) needs nothing. One that does not
    decode is planned with nowhere to go, so the script leaves it alone instead of seeing a change."""
    entries = run(client, [("HMGET", prefix + contract.UNACKED, *tags)])[0] if tags else []
    exchanges = sorted({_exchange(entry) for entry in entries if entry is not None} - {""})
    tables = run(client, [("SMEMBERS", binding_key(exchange, prefix)) for exchange in exchanges])
    bindings = {exchange: parse_bindings(table) for exchange, table in zip(exchanges, tables, strict=True)}
    messages, undecodable = [], []
    for tag, entry in zip(tags, entries, strict=True):
        if entry is None:
            continue
        plan = redelivery(tag, entry, registration, bindings, prefix)
        messages.append(plan or Redelivery(tag, "", "", (), ()))
        if plan is None:
            undecodable.append(tag)
    return messages, len(undecodable)


def _exchange(entry: Any) -> str:
    try:
        value = json.loads(entry)[1]
    except (TypeError, ValueError, IndexError, KeyError):
        return ""
    return value if isinstance(value, str) else ""


# Stranded queues: Celery queues in the broker that hold messages but are not in the spec (the default
# `celery` queue, a typo in a routing key, an app's own task_routes). Found from the lists themselves:
# a bounded SCAN for list keys, then the length and tail of each candidate in one pipeline.

SCAN_PAGE: Final = 1000
SCAN_BUDGET: Final = 100_000
"""Keys looked at per search at most (SCAN COUNT pages): about 100 round trips on a large database."""
_PRIORITY_SUFFIX: Final = re.compile(re.escape(contract.PRIORITY_SEPARATOR) + r"\d+$")
_NOT_TASK_QUEUES: Final = (contract.UNACKED, contract.UNACKED_INDEX, "unacked_mutex")
REPLY_SUFFIX: Final = ".reply.celery.pidbox"
"""Celery's remote-control reply queues: replies, not tasks."""


@dataclass(frozen=True, slots=True)
class UnservedQueues:
    waiting: Mapping[str, int]
    """Queue name -> messages waiting in it (every priority list summed)."""
    complete: bool
    """False when the search stopped at its budget before seeing the whole database."""


def queue_of_list(key: str, prefix: str = "") -> str | None:
    """The queue a list key belongs to (`<prefix><queue>[\\x06\\x16<step>]`), or None for keys that are
    not task queues: other prefixes, kombu's and our own bookkeeping, Celery's reply queues."""
    if not key.startswith(prefix):
        return None
    name = _PRIORITY_SUFFIX.sub("", key[len(prefix) :])
    if not name or name in _NOT_TASK_QUEUES or name.startswith(("jobqueue:", "_kombu.")) or name.endswith(REPLY_SUFFIX):
        return None
    return name


def is_task_message(raw: Any) -> bool:
    """A kombu envelope carrying a Celery task (protocol 2: the task name in its headers)."""
    try:
        message = json.loads(raw)
    except (TypeError, ValueError):
        return False
    return isinstance(message, dict) and isinstance(message.get("headers"), dict) and "task" in message["headers"]


def candidate_lists(keys: Collection[str], known: Collection[str], prefix: str = "") -> dict[str, list[str]]:
    """Queue name -> its list keys found, for the queues not in `known`."""
    found: dict[str, list[str]] = {}
    for key in sorted(keys):
        queue = queue_of_list(key, prefix)
        if queue is not None and queue not in known:
            found.setdefault(queue, []).append(key)
    return found


def tail_commands(lists: Mapping[str, Sequence[str]]) -> list[Command]:
    return [command for keys in lists.values() for key in keys for command in (("LLEN", key), ("LINDEX", key, "-1"))]


def parse_tails(lists: Mapping[str, Sequence[str]], replies: Sequence[Any]) -> dict[str, int]:
    """Waiting count of each candidate whose lists hold at least one Celery task message."""
    waiting: dict[str, int] = {}
    at = 0
    for queue, keys in lists.items():
        lengths, tails = replies[at : at + 2 * len(keys) : 2], replies[at + 1 : at + 2 * len(keys) : 2]
        at += 2 * len(keys)
        total = sum(int(length or 0) for length in lengths)
        if total and any(is_task_message(tail) for tail in tails):
            waiting[queue] = total
    return waiting


def unserved_queues(
    url: str,
    known: Collection[str],
    prefix: str = "",
    timeout: float = TIMEOUT_SECONDS,
    budget: int = SCAN_BUDGET,
) -> UnservedQueues:
    """Celery queues holding tasks in the broker that are not in `known` (the spec's queue names).

    A SCAN for list keys (`TYPE list`, `MATCH <prefix>*`, at most `budget` keys looked at: never KEYS),
    then one pipeline of LLEN and LINDEX -1 per candidate list. Raises BrokerError when Redis cannot be
    read."""
    keys: set[str] = set()
    with connected(url, timeout) as client:
        cursor, seen = 0, 0
        while True:
            cursor, page = client.scan(cursor, match=f"{_glob_escape(prefix)}*", count=SCAN_PAGE, _type="list")
            keys.update(_text(key) for key in page)
            seen += SCAN_PAGE
            if cursor == 0 or seen >= budget:
                break
        lists = candidate_lists(keys, known, prefix)
        replies = run(client, tail_commands(lists)) if lists else []
    return UnservedQueues(parse_tails(lists, replies), complete=cursor == 0)


def _glob_escape(text: str) -> str:
    return re.sub(r"([\\*?\[\]])", r"\\\1", text)


def purge_commands(queue: QueueKeys, prefix: str = "") -> list[Command]:
    """kombu's `Channel._purge`: LLEN and DEL of each priority list (sent in one MULTI)."""
    return [command for key in queue.lists(prefix) for command in (("LLEN", key), ("DEL", key))]


def purge_queue(url: str, queue: QueueKeys, prefix: str = "", timeout: float = TIMEOUT_SECONDS) -> int:
    """Delete every waiting message of one queue (not those in flight); returns how many there were.

    For a queue that is not served any more, once its tasks are not wanted: the documented command is
    `jobqueue-worker queue purge --queue <name> --yes`, from any worker Pod of the JobQueue."""
    with connected(url, timeout, "purging") as client, client.pipeline(transaction=True) as pipe:
        for command in purge_commands(queue, prefix):
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        replies = pipe.execute()
    return sum(int(count or 0) for count in replies[::2])
