"""Follow a Sentinel failover at once: when the Sentinels name a new master, cut this process's connections
to the old one.

A master that is SIGKILLed (its process gone, its node alive) resets every connection, and kombu's consumer
reconnects through the Sentinels to the new master by itself. A master whose node dies, or that hangs
(SIGSTOP), leaves the connections open and silent: kombu's consumer sits in BRPOP until its own staleness
check drops the connection (kombu 5.7: about 50 s, measured), the TCP keepalive probes (`app.KEEPALIVE_OPTIONS`)
end it after 25 s on a dead node only (a hung process's kernel still answers them), and a reconnect made
before the Sentinels have promoted a replica lands on the old master again. That is the hole of
celery/celery#6348 ("workers do not follow a Sentinel failover when the master connection drops") on the
consumer side; see docs/broker.md, "Clients and failover".

The fix is outside Celery and kombu: a thread asks the Sentinels every POLL_SECONDS which master they name
and, when it changes, shuts down (`shutdown(SHUT_RDWR)`) every TCP connection of this process to the old
master, and again at every later ask while any remain (one the first cut missed, or one made through a
Sentinel that still named the old master, see `MasterWatch.once`). Every client (the consumer's BRPOP, the
producer pool, the result backend, the heartbeat) then sees a closed connection, as after a crash, and
reconnects through the Sentinels: the path a killed master takes. Only an address the Sentinels no longer call
master is cut, so a worker never loses a good connection.

A killed master needs something else: the consumer's first reconnect comes before the promotion (the
Sentinels still name the dead master, or none), and Celery then backs off 2, 4, 6 ... s between rounds of
attempts (kombu's `ensure_connection` defaults), so the worker came back 6 s after the promotion in the
measurements. `RECONNECT_INTERVALS` makes those rounds 1, then 2 s apart.
Each prefork pool child runs a watch of its own (it has its own connections: task records, results, the
user's own calls through the app), one more small Sentinel request per second per process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import threading
from collections.abc import Iterator, Mapping
from typing import Any, Final
from urllib.parse import urlsplit

import redis.sentinel
from celery import Celery, signals
from celery.worker.consumer.consumer import Consumer
from redis.backoff import NoBackoff
from redis.retry import Retry

logger = logging.getLogger(__name__)

Address = tuple[str, int]
POLL_SECONDS: Final = 1.0
"""How often the Sentinels are asked: a failover is followed within this of the Sentinels' promotion."""
ASK_TIMEOUT_SECONDS: Final = 2.0
"""Each Sentinel is asked once with this timeout (a hung one costs this much, then the next is asked)."""
RECONNECT_INTERVALS: Final = {"interval_start": 1, "interval_step": 1, "interval_max": 2}
"""The consumer's reconnect back-off on a Sentinel broker (seconds between rounds over the Sentinels): a new
master is used within 2 s of its promotion, and a broker down for long costs one log line per 2 s."""
SENTINEL_PORT: Final = 26379
"""A Sentinel's port when its sentinel:// URL names none (kombu's SentinelTransport.default_port)."""


def sentinel_addresses(url: str) -> list[Address]:
    """The Sentinels of a kombu sentinel:// URL (`sentinel://[:pw@]host[:port][/db]`, `;`-separated)."""
    addresses = []
    for entry in url.split(";"):
        parts = urlsplit(entry.strip())
        if parts.scheme == "sentinel" and parts.hostname:
            addresses.append((parts.hostname, parts.port or SENTINEL_PORT))
    return addresses


def moved_from(previous: Address | None, current: Address | None) -> Address | None:
    """The old master to cut off: `previous`, when the Sentinels now name another one. Nothing when either
    is unknown (the Sentinels could not be asked, or there is no master yet)."""
    if previous is None or current is None or previous == current:
        return None
    return previous


def peers(address: Address) -> set[tuple[str, int]]:
    """The (IP, port) pairs a socket connected to `address` (a host name or an IP) can have as peer."""
    host, port = address
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        return {(host, port)}
    return {(str(info[4][0]), port) for info in infos} | {(host, port)}


def connections_to(address: Address) -> Iterator[socket.socket]:
    """A duplicate of each TCP socket of this process whose peer is `address` (Linux: /proc/self/fd).
    Close them; shutting one down acts on the connection itself, not just on the duplicate."""
    wanted = peers(address)
    try:
        descriptors = os.listdir("/proc/self/fd")
    except OSError:
        return
    for name in descriptors:
        try:
            if not os.readlink(f"/proc/self/fd/{name}").startswith("socket:"):
                continue
            descriptor = os.dup(int(name))
        except OSError:  # closed meanwhile
            continue
        try:
            duplicate = socket.socket(fileno=descriptor)
        except OSError:  # not an internet socket after all
            os.close(descriptor)
            continue
        try:
            if duplicate.type == socket.SOCK_STREAM and duplicate.getpeername()[:2] in wanted:
                yield duplicate
                continue
        except OSError:  # not connected
            pass
        duplicate.close()


def cut(address: Address) -> int:
    """Shut down every connection of this process to `address`; return how many there were."""
    count = 0
    for connection in connections_to(address):
        try:
            connection.shutdown(socket.SHUT_RDWR)
            count += 1
        except OSError:
            pass
        finally:
            connection.close()
    return count


class MasterWatch:
    """Asks the Sentinels for the master every `interval` in a daemon thread; cuts the old one off on a change."""

    def __init__(self, sentinel: redis.sentinel.Sentinel, master_name: str, interval: float = POLL_SECONDS) -> None:
        self._sentinel, self._name, self._interval = sentinel, master_name, interval
        self._stop = threading.Event()
        self.master: Address | None = None
        self.former: set[Address] = set()
        """Every master the Sentinels replaced while this watch ran: cut again at each ask (see `once`)."""

    @classmethod
    def for_app(cls, app: Celery) -> MasterWatch | None:
        """A watch of the app's Sentinel broker (its URL and transport options, `app.sentinel_options`);
        None when the broker is not sentinel://."""
        url = str(app.conf.broker_url or "")
        options: Mapping[str, Any] = app.conf.broker_transport_options or {}
        if not url.startswith("sentinel://") or not options.get("master_name"):
            return None
        own = dict(options.get("sentinel_kwargs") or {})
        asking = {**own, "socket_timeout": ASK_TIMEOUT_SECONDS, "socket_connect_timeout": ASK_TIMEOUT_SECONDS}
        sentinel = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            sentinel_addresses(url), sentinel_kwargs={**asking, "retry": Retry(NoBackoff(), 0)}
        )
        return cls(sentinel, str(options["master_name"]))

    def start(self) -> None:
        self.master = self._ask()
        threading.Thread(target=self._run, name="jobqueue-master-watch", daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def once(self) -> Address | None:
        """Ask now; on a new master, cut the old one off and return it.

        Connections to any replaced master are cut at every ask, not only at the change: a connection the
        first cut missed, or one made later through a Sentinel that still named the old master, otherwise
        stays on it. Most likely one such idle pooled connection lost a task: kombu writes a delivered message's
        `HSET unacked` on a pooled connection; on the frozen old master it timed out after the BRPOP had
        popped the message from the new master, and the message was gone (docs/broker.md, "A task lost in
        the worker")."""
        current = self._ask()
        old = moved_from(self.master, current)
        if old is not None:
            self.former.add(old)
        if current is None:  # the Sentinels could not be asked: keep every connection
            return None
        for address in sorted(self.former - {current}):
            count = cut(address)
            if address == old:
                logger.warning(
                    "the Sentinels moved the broker's master from %s:%s to %s:%s: closed %d connections to the old one",
                    *address,
                    *current,
                    count,
                )
            elif count:
                logger.warning(
                    "closed %d connections to %s:%s, a broker master the Sentinels replaced (made or missed since)",
                    count,
                    *address,
                )
        self.master = current
        return old

    def _ask(self) -> Address | None:
        try:
            host, port = self._sentinel.discover_master(self._name)  # type: ignore[no-untyped-call]
        except redis.RedisError:  # no Sentinel answers, or none names a master: keep what we knew
            return None
        return str(host), int(port)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.once()
            except Exception:  # never let a check end the thread: the next one may work
                logger.exception("asking the Sentinels for the broker's master failed")


def install(app: Celery) -> MasterWatch | None:
    """Start the watch of this process, and one in each prefork pool child as it starts (threads do not
    survive the fork); None, and nothing started, when the broker is not sentinel://. Stop the returned one."""
    watch = MasterWatch.for_app(app)
    if watch is None:
        return None
    watch.start()
    _patch_reconnect()

    def start_in_child(**_: Any) -> None:
        child = MasterWatch.for_app(app)
        if child is not None:
            child.start()

    signals.worker_process_init.connect(start_in_child, weak=False)
    return watch


@contextlib.contextmanager
def watching(app: Celery) -> Iterator[MasterWatch | None]:
    """A watch of the app's Sentinel broker while the block runs (a producer's sends and waits); nothing for
    other brokers."""
    watch = MasterWatch.for_app(app)
    if watch is not None:
        watch.start()
    try:
        yield watch
    finally:
        if watch is not None:
            watch.stop()


def _patch_reconnect() -> None:
    """Make the consumer's reconnect loop use RECONNECT_INTERVALS (Celery passes none: kombu's 2, 4, ... 30 s)."""
    if getattr(Consumer, "_jobqueue_reconnect_patched", False):
        return
    ensure_connected = Consumer.ensure_connected

    def patched(self: Any, conn: Any) -> Any:
        plain = conn.ensure_connection
        conn.ensure_connection = functools.partial(plain, **RECONNECT_INTERVALS)
        try:
            return ensure_connected(self, conn)
        finally:
            del conn.ensure_connection

    Consumer.ensure_connected = patched
    Consumer._jobqueue_reconnect_patched = True
