"""Workarounds for the ways Celery itself can lose a task, each applied once in the worker process.

- A task cancelled after a lost broker connection (`worker_cancel_long_running_tasks_on_connection_loss`)
  must come back, not be acknowledged. Celery marks the request cancelled only after it has recorded the
  retry in the result backend; when that backend is the broker that just went away, the recording
  fails, the mark is never set, and the killed task is then taken for a revoked one and acknowledged:
  lost. Here the mark is set whatever happens, so the message stays unacknowledged and comes back
  (`held.Holders`: the worker gives back what its old connection held as soon as it reconnects).
- A message kombu has popped from its queue (BRPOP) is held only in the worker's memory until kombu has
  recorded it as delivered and unacknowledged (`QoS.append`: ZADD `unacked_index` + HSET `unacked`, one
  pipeline on a pooled connection). When that write fails, kombu raises and drops the message: lost. After
  a Sentinel failover the pooled connection can still lead to the old, frozen master (docs/broker.md, "A task lost in
  the worker"; kombu has the same window on any connection error). Here the write is tried once more on a
  fresh connection from the pool (through the Sentinels: to the new master), which is safe because both
  commands are idempotent; if that fails too, the message is given back to the tail of its queue (kombu's own
  restore, next to be taken) before the error goes on. Only when even that fails is it lost, and the log
  says which one.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.worker import request as celery_request
from kombu.transport import redis as kombu_redis

logger = logging.getLogger(__name__)


def _patch_cancel() -> None:
    cls = celery_request.Request
    if getattr(cls, "_jobqueue_cancel_patched", False):
        return
    cancel = cls.cancel

    def patched_cancel(self: Any, pool: Any, signal: Any = None, emit_retry: bool = True) -> Any:
        try:
            return cancel(self, pool, signal=signal, emit_retry=emit_retry)
        finally:
            if self.time_start:  # the job was running, so it was terminated: never announce it as revoked
                self._already_cancelled = True

    cls.cancel = patched_cancel
    cls._jobqueue_cancel_patched = True


def _give_back(qos: Any, message: Any) -> None:
    """Put a popped message back at the tail of its queue (kombu's restore: marked redelivered)."""
    delivery = message.delivery_info
    with qos.channel.conn_or_acquire() as client:
        pipe = client.pipeline()
        qos.channel._do_restore_message(message._raw, delivery["exchange"], delivery["routing_key"], pipe)
        pipe.execute()


def _patch_unacked_record() -> None:
    cls: Any = kombu_redis.QoS
    if getattr(cls, "_jobqueue_append_patched", False):
        return
    append = cls.append

    def patched_append(self: Any, message: Any, delivery_tag: str) -> Any:
        errors = self.channel.connection_errors
        try:
            return append(self, message, delivery_tag)
        except errors as first:
            logger.warning("recording delivered message %s failed (%r): trying a new connection", delivery_tag, first)
        try:
            return append(self, message, delivery_tag)
        except errors as second:
            try:
                _give_back(self, message)
            except errors as third:
                logger.error("message %s was taken from its queue and is lost: %r", delivery_tag, third)
                raise second from third
            logger.warning("message %s given back to its queue: recording it failed twice (%r)", delivery_tag, second)
            raise

    cls.append = patched_append
    cls._jobqueue_append_patched = True


def install() -> None:
    _patch_cancel()
    _patch_unacked_record()
