"""Which deliveries this worker process holds, written where and when kombu writes its own record.

kombu's Redis transport emulates acks: on delivery one MULTI adds the tag to `unacked_index` (with the
time) and the message to `unacked` (`QoS.append`); an ack, a reject or a restore removes both
(`QoS._remove_from_indices`, inside the restore's transaction). `HeldQoS` adds the tag, with the same
delivery time, to its incarnation's hash (`contract.held_key`) in that same MULTI and removes it in the
same batch, so the hash never misses a message kombu holds for this process.

The hash only points; `unacked` stays the truth. A delivery tag is assigned when a message is published
and kept across redeliveries, so after kombu's visibility sweep gave a message to another worker the
tag can be listed here and held there: the delivery time tells them apart (a restore takes a message
only while its `unacked_index` score is still the delivery time recorded here).

One incarnation per consuming channel: when the consumer reconnects after a lost broker connection, its
new task channel starts a new incarnation (`Holders.bind`, from the `TaskChannel` consumer step before
any delivery), and what the old channel held (which kombu could not give back with the connection gone,
and which can no longer be acknowledged) is handed to `retire`, which restores it at once instead of
after the visibility timeout. The first delivery of an incarnation also writes its registration (same
MULTI), so no held tag is ever without one.
"""

from __future__ import annotations

import json
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual

from jobqueue_worker import contract


@dataclass
class Holder:
    """One incarnation the deliveries of this process belong to (keys without the prefix: kombu adds it)."""

    instance: str
    registration: str
    """The JSON `contract.Registration`."""
    registered: threading.Event = field(default_factory=threading.Event)

    @property
    def held(self) -> str:
        return contract.held_key(self.instance)


class Holders:
    """The current holder, and a new one for each new consuming channel after the first."""

    def __init__(
        self,
        first: Holder,
        successor: Callable[[], Holder] | None = None,
        retire: Callable[[Holder], None] | None = None,
    ) -> None:
        self.current = first
        self._successor, self._retire = successor, retire
        self._bound_to: weakref.ref[object] | None = None  # the QoS the current holder records for
        self._lock = threading.Lock()

    def bind(self, qos: object) -> Holder:
        """The holder for a QoS's first delivery; a second channel retires the first one's holder."""
        with self._lock:
            if self._bound_to is None or self._bound_to() is qos or self._successor is None:
                self._bound_to = weakref.ref(qos)
                return self.current
            retired, self.current = self.current, self._successor()  # the old channel may be gone already
            self._bound_to = weakref.ref(qos)
        if self._retire is not None:
            self._retire(retired)
        return self.current


_HOLDERS: Holders | None = None


class HeldQoS(kombu_redis.QoS):
    """kombu's Redis QoS, also keeping its incarnation's hash of held delivery tags."""

    _holder: Holder | None = None
    """Bound at this channel's first delivery; None for channels that never deliver (pidbox, gossip)."""

    def append(self, message: Any, delivery_tag: str) -> None:
        holders = _HOLDERS
        if holders is None:  # not a worker process (never installed): kombu's own behaviour
            super().append(message, delivery_tag)  # type: ignore[no-untyped-call]
            return
        if self._holder is None:
            self._holder = holders.bind(self)
        holder = self._holder
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
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]  # kombu's in-memory record

    def _remove_from_indices(self, delivery_tag: str, pipe: Any = None) -> Any:
        holder = self._holder
        with self.pipe_or_acquire(pipe) as pipe:
            pipe = super()._remove_from_indices(delivery_tag, pipe)  # type: ignore[no-untyped-call]
            return pipe if holder is None else pipe.hdel(holder.held, delivery_tag)


class TaskChannel(bootsteps.StartStopStep):  # type: ignore[misc]  # celery is untyped
    """Binds the task consumer's channel to its holder each time the consumer (re)starts, before the event
    loop delivers anything: a reconnect retires the previous channel's holder even if nothing new comes."""

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def start(self, parent: Any) -> None:
        holders = _HOLDERS
        qos = getattr(getattr(parent.task_consumer, "channel", None), "qos", None)
        if holders is not None and isinstance(qos, HeldQoS) and qos._holder is None:
            qos._holder = holders.bind(qos)


def install(holders: Holders | None) -> None:
    """Make every Redis channel of this process (plain and Sentinel) use HeldQoS with `holders`; with
    None, channels created from now on behave exactly as kombu's QoS again."""
    global _HOLDERS
    _HOLDERS = holders
    kombu_redis.Channel.QoS = HeldQoS
