"""Which deliveries this worker process holds, written where and when kombu writes its own record.

kombu's Redis transport emulates acks: on delivery one MULTI adds the tag to `unacked_index` (with the
time) and the message to `unacked` (`QoS.append`); an ack, a reject or a restore removes both
(`QoS._remove_from_indices`, inside the restore's transaction). `HeldQoS` adds the tag, with the same
delivery time, to this incarnation's hash (`contract.held_key`) in that same MULTI and removes it in the
same batch, so the hash never misses a message kombu holds for this process.

The hash only points; `unacked` stays the truth. A delivery tag is assigned when a message is published
and kept across redeliveries, so after kombu's visibility sweep gave a message to another worker the
tag can be listed here and held there: the delivery time tells them apart (the operator's restore takes
a message only while its `unacked_index` score is still this incarnation's delivery time).

The first delivery also writes the incarnation's registration (same MULTI), so no held tag can exist
without one, whatever the heartbeat thread managed to write before.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from typing import Any

from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from jobqueue_worker import contract


@dataclass
class Holder:
    """The incarnation the deliveries of this process belong to (keys without the prefix: kombu adds it)."""

    instance: str
    registration: str
    """The JSON `contract.Registration`."""
    registered: threading.Event

    @property
    def held(self) -> str:
        return contract.held_key(self.instance)


_HOLDER: Holder | None = None


class HeldQoS(kombu_redis.QoS):
    """kombu's Redis QoS, also keeping the incarnation's hash of held delivery tags."""

    def append(self, message: Any, delivery_tag: str) -> None:
        holder = _HOLDER
        if holder is None:  # not a worker process (never installed): kombu's own behaviour
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        delivery = message.delivery_info
        now = time.time()
        with self.pipe_or_acquire() as pipe:
            pipe.zadd(self.unacked_index_key, {delivery_tag: now})
            entry = [message._raw, delivery["exchange"], delivery["routing_key"]]
            pipe.hset(self.unacked_key, delivery_tag, json.dumps(entry))  # what kombu's dumps writes
            pipe.hset(holder.held, delivery_tag, repr(now))  # what ZADD stores as the score
            if not holder.registered.is_set():
                pipe.hset(contract.WORKERS, holder.instance, holder.registration)
            pipe.execute()
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]  # kombu's in-memory bookkeeping, not its Redis write

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        holder = _HOLDER
        with self.pipe_or_acquire(pipe) as pipe:
            pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
            return pipe if holder is None else pipe.hdel(holder.held, delivery_tag)


def install(holder: Holder | None) -> None:
    """Make every Redis channel of this process (plain and Sentinel) use HeldQoS for `holder`; with None,
    HeldQoS behaves exactly as kombu's QoS again."""
    global _HOLDER
    _HOLDER = holder
    kombu_redis.Channel.QoS = HeldQoS
