"""Sends that a replica has confirmed: the project's producers on a Sentinel broker publish each task with
`LPUSH` followed by `WAIT 1 <timeout>` on the same connection, and report success only when a replica has it.

Why: Redis replicates asynchronously. The master acknowledges an `LPUSH` as soon as it holds it in memory,
and a master that dies before its replicas received it takes the task along: the replica Sentinel promotes
has never seen it, though the producer was told "sent". `min-replicas-to-write 1` (the managed broker's
setting) bounds that window to `min-replicas-max-lag` (10 s) of writes, it does not close it. `WAIT` does: it
returns once `CONFIRM_REPLICAS` replicas have every write of this connection so far (Redis's own
synchronous-replication primitive; the commands travel in one pipeline, so nothing else runs on the
connection between them). Sentinel promotes the most up-to-date replica it can reach, so a confirmed task
survives the failover unless the master and every replica holding it are lost together (and, as Jepsen
showed in 2013, a partition can still split the vote: WAIT is not consensus). docs/broker.md, "Clients and
failover", has the measured cost.

Not confirmed within the timeout is an error (`NotReplicated`), never retried here: the master may hold the
task, so sending it again may run it twice; the caller decides. kombu's batch publishing is turned off for
this channel, so every publish goes through `_put`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Final, TypeVar

import redis.exceptions
from kombu.transport.redis import SentinelChannel, SentinelTransport
from kombu.utils.json import dumps

CONFIRM_REPLICAS: Final = 1
"""How many replicas must hold a task before its send counts as done (the managed broker has two)."""
CONFIRM_TIMEOUT_MS: Final = 5000
"""How long a send waits for them; below the socket timeout (10 s, app.SOCKET_TIMEOUT_SECONDS)."""
TRANSPORT: Final = f"{__name__}:ConfirmingSentinelTransport"
"""Celery's `broker_transport` for it (the broker URL stays sentinel://)."""
NO_REPLICA_WAIT_SECONDS: Final = 10.0
"""How long a send waits out a master that refuses writes for want of a replica (`NOREPLICAS`)."""
NO_REPLICA_PAUSE_SECONDS: Final = 0.2

T = TypeVar("T")


def refused_for_want_of_replicas(exc: BaseException) -> bool:
    """Whether the master refused the write (`min-replicas-to-write`), anywhere in the exception's chain."""
    current: BaseException | None = exc
    for _ in range(10):
        if current is None:
            return False
        if "NOREPLICAS" in str(current):
            return True
        current = current.__cause__ or current.__context__
    return False


def while_no_replica(send: Callable[[], T], wait: float = NO_REPLICA_WAIT_SECONDS) -> T:
    """Call `send`, again while the master refuses writes for want of a replica, for up to `wait` seconds.

    A master promoted a moment ago has no replica until Sentinel points the others at it and one has
    synced (about a second, measured), and with `min-replicas-to-write 1` it answers every write with
    `NOREPLICAS` meanwhile, the queue declaration included. kombu retries connection errors only. A refused
    write wrote nothing, so sending again cannot send twice."""
    deadline = time.monotonic() + wait
    while True:
        try:
            return send()
        except Exception as exc:
            if not refused_for_want_of_replicas(exc) or time.monotonic() >= deadline:
                raise
        time.sleep(NO_REPLICA_PAUSE_SECONDS)


class NotReplicated(Exception):
    """The master took the task but no replica confirmed it in time: it may be lost in a failover."""


class ConfirmingSentinelChannel(SentinelChannel):
    """kombu's Sentinel channel whose every publish waits for a replica (`WAIT`)."""

    supports_batch_publish = False  # a batch would skip `_put`: one WAIT per task keeps the promise simple

    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:
        """kombu's `Channel._put` (LPUSH, and the queue's PEXPIREs if it has an expiry) plus the WAIT. A channel
        that a lost connection closed meanwhile has no connection left (kombu would fail with an AttributeError,
        which its publish retries do not cover): that is raised as the connection error it is, so kombu revives
        the producer on a new channel and sends again."""
        if self.connection is None:
            raise redis.exceptions.ConnectionError("the channel was closed by a lost broker connection")
        priority = self._get_message_priority(message, reverse=False)  # type: ignore[no-untyped-call]
        key = self._q_for_pri(queue, priority)  # type: ignore[no-untyped-call]
        with self.conn_or_acquire() as client, client.pipeline(transaction=False) as pipe:
            pipe.lpush(key, dumps(message))  # type: ignore[no-untyped-call]
            if self._expires and queue in self._expires:
                for step in self.priority_steps:
                    pipe.pexpire(self._q_for_pri(queue, step), self._expires[queue])  # type: ignore[no-untyped-call]
            pipe.execute_command("WAIT", CONFIRM_REPLICAS, CONFIRM_TIMEOUT_MS)
            confirmed = int(pipe.execute()[-1])
        if confirmed < CONFIRM_REPLICAS:
            raise NotReplicated(
                f"the broker took the task but {confirmed} of the {CONFIRM_REPLICAS} replicas needed confirmed it "
                f"within {CONFIRM_TIMEOUT_MS / 1000:g} s: a failover now may lose it; sending it again may run it twice"
            )


class ConfirmingSentinelTransport(SentinelTransport):
    """kombu's Sentinel transport with `ConfirmingSentinelChannel`."""

    Channel = ConfirmingSentinelChannel
