"""A plain redis-py client on the Celery app's own broker connection pool.

The same URL, TLS settings, Sentinel master and credentials the consumer uses, without building a
second client from the URL. kombu's own client prefixes only the commands kombu itself sends (and not
EVALSHA's later keys), so the callers add the key prefix (`global_keyprefix`) themselves, explicitly.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import redis
from celery import Celery

ACQUIRE_TIMEOUT_SECONDS = 5.0


@contextlib.contextmanager
def plain_client(app: Celery, timeout: float = ACQUIRE_TIMEOUT_SECONDS) -> Iterator[redis.Redis]:
    """A client for one block; raises what kombu or redis-py raise when the broker is unreachable."""
    with app.pool.acquire(block=True, timeout=timeout) as connection:
        yield redis.Redis(connection_pool=connection.default_channel.client.connection_pool)


def key_prefix(app: Celery) -> str:
    """The app's `global_keyprefix` (the worker sets it from JOBQUEUE_KEY_PREFIX)."""
    options = app.conf.broker_transport_options or {}
    return str(options.get("global_keyprefix") or "")
