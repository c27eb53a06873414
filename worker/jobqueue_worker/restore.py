"""How a message a dead worker held goes back to its queue: kombu's restore, atomically, in one Lua script.

Shared by the operator (`jobqueue_operator.broker.restore_incarnation`, once a worker's Pod is gone) and
the worker (which gives back, the same way, what it held before a lost broker connection). Standard
library only, plus the redis-py client a caller passes in.

For each tag in the incarnation's held hash still in `unacked` under the same delivery time: the message
as kombu's `QoS.restore_by_tag` pushes it (`_do_restore_message`: marked redelivered, RPUSH to the list
of its priority step, so it is the next popped; queues from kombu's binding table), removed from
`unacked` and `unacked_index`, one worker loss counted for its task id; then the held hash and the
registration go. Refused while the incarnation's heartbeat key exists.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from jobqueue_worker import contract

Command = tuple[str, ...]


class RestoreError(Exception):
    """The broker's data does not allow a restore (unreadable registration, a held hash that keeps changing)."""


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def run(client: Any, pipeline: Sequence[Command]) -> list[Any]:
    """Send commands in one round trip (no MULTI); the replies in order."""
    with client.pipeline(transaction=False) as pipe:
        for command in pipeline:
            pipe.execute_command(*command)
        return list(pipe.execute())


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
-- ARGV: 1 incarnation id, 2 loss-hash TTL (0: count no loss), 3 number of messages, then per message:
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
      if m.task ~= '' and ARGV[2] ~= '0' then
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
    instance: str, redeliveries: Sequence[Redelivery], prefix: str = "", count_losses: bool = True
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

    args: list[str | int] = [instance, contract.LOSSES_TTL_SECONDS if count_losses else 0, len(redeliveries)]
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
        raise RestoreError(f"unexpected reply from the restore script: {status!r}")
    pairs = reply[1:]
    return Restore(RestoreOutcome.RESTORED, {_text(pairs[i]): int(pairs[i + 1]) for i in range(0, len(pairs), 2)}, left)


RESTORE_ATTEMPTS: Final = 3


def restore(client: Any, instance: str, prefix: str = "", count_losses: bool = True) -> Restore:
    """Restore one incarnation with `client` (redis-py); raises RestoreError, and what redis-py raises.

    `count_losses`: count one worker loss per restored task (the worker died); not when a live worker
    gives back what it held before a broker connection loss."""
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
            raise RestoreError(f"worker {instance}: {exc}") from None
        tags = sorted(_text(member) for member in members or ())
        messages, left = _plan(client, registration, tags, prefix)
        keys, args = restore_arguments(instance, messages, prefix, count_losses)
        result = parse_restore(script(keys=keys, args=args, client=client), left)
        if result is not None:
            return result
    raise RestoreError(f"worker {instance}: its held messages kept changing during {RESTORE_ATTEMPTS} restores")


def _plan(
    client: Any, registration: contract.Registration, tags: Sequence[str], prefix: str
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
