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
import logging
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from celery import bootsteps
from kombu.transport import redis as kombu_redis
from kombu.transport import virtual
from redis import exceptions as redis_errors

from jobqueue_worker import contract

log = logging.getLogger(__name__)

FULL_WAIT_SECONDS = 30.0
"""How long a delivery waits to be recorded while the broker is over its maxmemory (well inside the
liveness probe's 60 s: the event loop waits with it)."""
FIRST_PAUSE_SECONDS = 0.2
LAST_PAUSE_SECONDS = 2.0
"""The pause between tries to record a delivery doubles from the first to the last."""


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
        self._record_while_full(message, delivery_tag, self._holder)
        virtual.QoS.append(self, message, delivery_tag)  # type: ignore[no-untyped-call]  # kombu's in-memory record

    def _record(self, message: Any, delivery_tag: str, holder: Holder) -> None:
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

    def _record_while_full(self, message: Any, delivery_tag: str, holder: Holder) -> None:
        """Record a delivery, waiting out a broker over its maxmemory: the message is already off its list
        (BRPOP is allowed when full, the writes after it are not), and kombu would drop it on the error.
        The operator opens a managed broker's memory reserve within a tick or two; a broker still full
        after `FULL_WAIT_SECONDS` gets the task run unrecorded (an ack then finds nothing to remove), with
        an error in the log, rather than lost at once."""
        deadline = time.monotonic() + FULL_WAIT_SECONDS
        pause = FIRST_PAUSE_SECONDS
        while True:
            try:
                self._record(message, delivery_tag, holder)
                return
            except redis_errors.OutOfMemoryError:
                if time.monotonic() >= deadline:
                    task = (message.headers or {}).get("id", delivery_tag)
                    queue = message.delivery_info.get("routing_key")
                    log.error(
                        "task %s taken from %s is not recorded as held: the broker stayed over its maxmemory "
                        "for %.0f s; it runs, but a worker death before it ends loses it",
                        task, queue, FULL_WAIT_SECONDS,
                    )  # fmt: skip
                    return
                if pause == FIRST_PAUSE_SECONDS:
                    log.warning("the broker is over its maxmemory: holding a delivery until it can be recorded")
                time.sleep(pause)
                pause = min(pause * 2, LAST_PAUSE_SECONDS)

    def restore_visible(self, *args: Any, **kwargs: Any) -> None:
        """kombu's visibility sweep, skipped while the broker is over its maxmemory: its lock is a SET,
        refused then, and the error would end the worker. A sweep skipped is one the next call makes."""
        try:
            super().restore_visible(*args, **kwargs)  # type: ignore[no-untyped-call]
        except redis_errors.OutOfMemoryError:
            log.warning("the broker is over its maxmemory: the visibility sweep waits for the next round")

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
