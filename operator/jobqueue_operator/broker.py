"""The only module that talks to Redis: is a broker URL well formed, does the broker answer, how deep are a
JobQueue's queues; which worker incarnations are registered and putting a dead one's messages back; which
queues outside the spec hold tasks, and purging one.

Reading depth follows kombu's Redis transport (docs/autoscaling.md, "Measurement"):
- a queue's waiting tasks are spread over one list per priority step: `<prefix><q>` for the first step,
  `<prefix><q>\\x06\\x16<step>` for the others; LPUSH adds at the head, the worker pops the tail, so the
  tail element is the oldest;
- a task delivered to a worker and not yet acked sits in the `<prefix>unacked` hash (delivery tag ->
  JSON `[message, exchange, routing_key]`), one hash for every queue of the database;
- the worker counts finished tasks and their run time in `<prefix>jobqueue:stats:<q>` (worker contract).
All of it is read in ONE pipeline per JobQueue. Building the commands and parsing the replies are pure
functions (`commands`, `parse`), so only `read_counts` does I/O; the same split holds for the sections
below (docs/worker-contract.md describes the keys).

Every client is opened by `client_for`: a redis:// or rediss:// URL is the broker itself; a sentinel://
URL (kombu's form: `sentinel://[:password@]host[:port][/db]`, several `;`-separated) names the Sentinels,
which are asked for the current master of `master_name` (redis-py's `Sentinel.master_for`), so that depth
reads, redelivery, the memory reserve and the reachability check follow a failover (docs/broker.md).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final
from urllib.parse import unquote, urlsplit

import redis
import redis.sentinel
from redis.backoff import NoBackoff
from redis.retry import Retry

from jobqueue_operator import oldest
from jobqueue_worker import contract, restore
from jobqueue_worker.restore import Restore as Restore  # re-exported: what restore_incarnation returns
from jobqueue_worker.restore import RestoreOutcome as RestoreOutcome

SCHEMES: Final = ("redis", "rediss", "sentinel")
TIMEOUT_SECONDS: Final = 2.0
SENTINEL_PORT: Final = 26379
"""A Sentinel's port when its sentinel:// URL names none (kombu's SentinelTransport.default_port)."""
SENTINEL_RETRIES: Final = 0
"""Each Sentinel is asked once per look-up: the next one is the retry, so a dead one costs one timeout."""
MASTER_RETRIES: Final = 0
"""A master connection that fails is not retried (the next tick is the retry): a read through Sentinel
fails after at most (Sentinels + 1) timeouts, one per Sentinel that does not answer and one for the master."""

Command = tuple[str, ...]


class BrokerError(Exception):
    """The broker URL is malformed or the broker does not answer; the message never holds a password."""


class BrokerAuthError(BrokerError):
    """The broker answers but refuses the credentials (wrong password or user): fix the Secret, not the network."""


_where = contract.redacted


def first_address(url: str) -> str:
    """A redis:// or rediss:// URL checked (a sentinel:// one: `parse_sentinel`): its first `;` entry."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise BrokerError(f"the broker URL must start with redis://, rediss:// or sentinel://, not {scheme or '?'}://")
    first = url.split(";")[0]
    try:
        if urlsplit(first).hostname is None:
            raise BrokerError(f"the broker URL {_where(first)} names no host")
        urlsplit(first).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise BrokerError("the broker URL has an invalid port") from None
    return first


def is_sentinel(url: str) -> bool:
    """A sentinel:// URL: its clients reach the master through the Sentinels it lists."""
    return urlsplit(url).scheme == "sentinel"


@dataclass(frozen=True, slots=True)
class SentinelUrl:
    """A sentinel:// URL as kombu reads it: every Sentinel's address; the credentials and database of the
    first, used for the master (and, the managed broker's rule, the same password for the Sentinels)."""

    sentinels: tuple[tuple[str, int], ...]
    username: str | None
    password: str | None
    db: int


def parse_sentinel(url: str) -> SentinelUrl:
    """The Sentinels of a sentinel:// URL (`;`-separated entries, each sentinel://); raises BrokerError."""
    entries = [entry for entry in url.split(";") if entry.strip()]
    addresses = []
    for entry in entries:
        parts = urlsplit(entry.strip())
        if parts.scheme != "sentinel":
            raise BrokerError(f"every entry of a sentinel:// broker URL must be sentinel://, not {_where(entry)}")
        try:
            port = parts.port or SENTINEL_PORT
        except ValueError:
            raise BrokerError("the broker URL has an invalid port") from None
        if not parts.hostname:
            raise BrokerError(f"the broker URL {_where(entry)} names no host")
        addresses.append((parts.hostname, port))
    if not addresses:
        raise BrokerError("the sentinel:// broker URL names no Sentinel")
    first = urlsplit(entries[0].strip())
    db = first.path.strip("/") or "0"
    if not db.isdigit():
        raise BrokerError(f"the broker URL's database must be a number, not {db!r}")
    # percent-decoded, as kombu and redis-py's from_url read a URL's credentials
    username, password = first.username, first.password
    return SentinelUrl(
        tuple(addresses),
        unquote(username) if username else None,
        None if password is None else unquote(password),
        int(db),
    )


def sentinel_clients(url: str, timeout: float = TIMEOUT_SECONDS) -> list[redis.Redis]:
    """One client per Sentinel of a sentinel:// URL (the URL's password: Redis and Sentinel share it),
    answers decoded, each asked once (`SENTINEL_RETRIES`). Close them."""
    parsed = parse_sentinel(url)
    return [
        redis.Redis(host, port, **_sentinel_options(parsed, timeout), decode_responses=True)
        for host, port in parsed.sentinels
    ]


def _sentinel_options(parsed: SentinelUrl, timeout: float) -> dict[str, Any]:
    """The URL's user and password log in to the Sentinels too (the managed broker's Sentinels declare the
    operator's user; without a user, Sentinel's default user with the password)."""
    return {
        "username": parsed.username,
        "password": parsed.password,
        "socket_timeout": timeout,
        "socket_connect_timeout": timeout,
        "retry": Retry(NoBackoff(), SENTINEL_RETRIES),
    }


@contextlib.contextmanager
def client_for(
    url: str, timeout: float = TIMEOUT_SECONDS, master_name: str = contract.SENTINEL_MASTER_NAME
) -> Iterator[redis.Redis]:
    """A client of the broker's master, closed when the block ends: for redis:// and rediss:// the URL's
    server; for sentinel:// the master the Sentinels name for `master_name` now (asked again whenever a
    connection is opened, so a failover between two reads is followed). Every socket operation is bounded
    by `timeout`. Raises BrokerError for a malformed URL; Redis errors inside the block are the caller's."""
    if not is_sentinel(url):
        client = redis.Redis.from_url(first_address(url), socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            yield client
        finally:
            client.close()
        return
    parsed = parse_sentinel(url)
    group = redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
        list(parsed.sentinels),
        sentinel_kwargs=_sentinel_options(parsed, timeout),
        username=parsed.username,
        password=parsed.password,
        db=parsed.db,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), MASTER_RETRIES),
    )
    master: redis.Redis = group.master_for(master_name)  # type: ignore[no-untyped-call]
    try:
        yield master
    finally:
        master.close()
        group.close()


def describe(url: str, master_name: str = contract.SENTINEL_MASTER_NAME) -> str:
    """Where a URL leads, for messages (never a password): the server, or the Sentinels and the master name."""
    if not is_sentinel(url):
        return _where(first_address(url))
    sentinels = ", ".join(f"{host}:{port}" for host, port in parse_sentinel(url).sentinels)
    return f"the master {master_name!r} of the Sentinels {sentinels}"


def ping(url: str, timeout: float = TIMEOUT_SECONDS, master_name: str = contract.SENTINEL_MASTER_NAME) -> None:
    """PING the broker (for sentinel://, the master the Sentinels name); raises BrokerError when it does not
    answer, BrokerAuthError when it refuses the credentials."""
    where = describe(url, master_name)
    try:
        with client_for(url, timeout, master_name) as connection:
            connection.ping()
    except redis.sentinel.MasterNotFoundError as exc:
        if _SENTINEL_AUTH_REFUSAL in str(exc):
            raise BrokerAuthError(f"{where}: the Sentinels refuse the password in the broker URL") from None
        raise BrokerError(f"{where} does not answer PING: {_said(exc)}") from None
    except (redis.AuthenticationError, redis.exceptions.AuthorizationError) as exc:
        raise BrokerAuthError(f"{where} refuses the credentials in the broker URL: {exc}") from None
    except redis.ResponseError as exc:
        if _is_auth_refusal(exc):
            raise BrokerAuthError(f"{where} refuses the credentials in the broker URL: {exc}") from None
        raise BrokerError(f"{where} does not answer PING: {exc}") from None
    except redis.RedisError as exc:
        raise BrokerError(f"{where} does not answer PING: {_said(exc)}") from None


_SENTINEL_AUTH_REFUSAL: Final = "AuthenticationError"
"""How redis-py's MasterNotFoundError names a Sentinel that refused the password (it lists each one's error)."""


def _said(exc: redis.RedisError) -> str:
    """A Redis error for a message: redis-py's MasterNotFoundError lists every Sentinel client's repr."""
    if isinstance(exc, redis.sentinel.MasterNotFoundError):
        if _SENTINEL_AUTH_REFUSAL in str(exc):
            return "the Sentinels refuse the password in the broker URL"
        return "no Sentinel names a working master (they do not answer, do not know the name, or see it down)"
    return str(exc)


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
    ready_by_step: tuple[tuple[int, int], ...] = field(default=(), compare=False)
    """(priority step, waiting tasks) of each priority list, in the order of the steps: a breakdown of
    `ready` for the metrics, left out of comparisons."""
    dead_letters: int = 0
    """Entries of the queue's dead-letter list (`<prefix>jobqueue:deadletter:<q>`)."""
    tails: tuple[oldest.Tail, ...] = field(default=(), compare=False)
    """The oldest message of each non-empty priority list (its id and send time): the operator dates an
    unstamped one by when it first saw it (`oldest.py`)."""


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


def tail(raw: Any) -> oldest.Tail | None:
    """The id and send time of one raw message (kombu's JSON envelope); None for an empty list."""
    if raw is None:
        return None
    try:
        message = json.loads(raw)
        properties, headers = message.get("properties") or {}, message.get("headers") or {}
        found = properties.get("delivery_tag") or headers.get("id") or ""
    except (ValueError, AttributeError):
        found = ""
    return oldest.Tail(found if isinstance(found, str) else str(found), sent_at(raw))


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
            ready_by_step=tuple((step, int(length or 0)) for step, length in zip(queue.steps, lengths, strict=True)),
            dead_letters=int(dead_letters or 0),
            tails=tuple(found for found in (tail(raw) for raw in tails) if found is not None),
        )
    return counts


def read_counts(
    url: str, queues: Sequence[QueueKeys], prefix: str = "", timeout: float = TIMEOUT_SECONDS
) -> Mapping[str, QueueCounts]:
    """Read every queue of one JobQueue in one pipeline; raises BrokerError when Redis cannot be read."""
    with connected(url, timeout, "measuring") as client:
        replies = run(client, commands(queues, prefix))
    return parse(queues, replies)


@contextlib.contextmanager
def connected(
    url: str,
    timeout: float = TIMEOUT_SECONDS,
    purpose: str = "reading",
    master_name: str = contract.SENTINEL_MASTER_NAME,
) -> Iterator[redis.Redis]:
    """A client of the broker's master for one block of commands (`client_for`); any Redis failure inside
    becomes a BrokerError that says what was being done (`purpose`)."""
    where = describe(url, master_name)
    try:
        with client_for(url, timeout, master_name) as client:
            yield client
    except redis.RedisError as exc:
        raise BrokerError(f"{where} cannot be read ({purpose}): {_said(exc)}") from None


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
    result_backend_problem: str = ""
    """What it reported next to its heartbeat about its result backend ("": nothing wrong, or not checked)."""


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
    """Per registration: EXISTS of its heartbeat, HLEN of its held hash, GET of its result backend report."""
    pipeline: list[Command] = []
    for registration in registrations:
        pipeline += [
            ("EXISTS", contract.alive_key(registration.instance, prefix)),
            ("HLEN", contract.held_key(registration.instance, prefix)),
            ("GET", contract.result_backend_key(registration.instance, prefix)),
        ]
    return pipeline


def parse_liveness(registrations: Sequence[contract.Registration], replies: Sequence[Any]) -> list[Incarnation]:
    found = []
    for i, registration in enumerate(registrations):
        alive, held, report = replies[3 * i : 3 * i + 3]
        problem = report.decode(errors="replace") if isinstance(report, bytes) else str(report or "")
        found.append(Incarnation(registration, bool(int(alive or 0)), int(held or 0), problem))
    return found


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


def restore_incarnation(url: str, instance: str, prefix: str = "", timeout: float = TIMEOUT_SECONDS) -> Restore:
    """Put one dead incarnation's held messages back on their queues, atomically, and forget it.

    Call it only for an incarnation whose Pod is gone for good (deleted, or its container terminated and
    not restarting in place); a heartbeat still alive is refused inside the script (`ALIVE`). Each
    restored message counts one worker loss for its task id in `<prefix>jobqueue:losses:<queue>` (the
    worker dead-letters a task lost too often). How: `jobqueue_worker.restore` (shared with the worker,
    which gives back what it held before a broker connection loss the same way). Raises BrokerError
    when Redis cannot be read."""
    with connected(url, timeout, "restoring") as client:
        try:
            return restore.restore(client, instance, prefix)
        except restore.RestoreError as exc:
            raise BrokerError(str(exc)) from None


# Stranded queues: Celery queues in the broker that hold messages but are not in the spec (the default
# `celery` queue, a typo in a routing key, an app's own task_routes). Found from the lists themselves:
# a bounded SCAN for list keys, then the length and tail of each candidate in one pipeline.

SCAN_PAGE: Final = 1000
SCAN_BUDGET: Final = 100_000
"""Keys looked at per search at most (SCAN COUNT pages): about 100 round trips on a large database."""
_PRIORITY_SUFFIX: Final = re.compile(re.escape(contract.PRIORITY_SEPARATOR) + r"\d+$")


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
    reserved = (
        name in contract.RESERVED_QUEUE_NAMES
        or name.startswith(contract.RESERVED_QUEUE_PREFIXES)
        or name.endswith(contract.RESERVED_QUEUE_SUFFIXES)
    )
    if not name or reserved:
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


# The broker's memory: a Redis at its maxmemory refuses writes (noeviction), so producers' tasks fail.


def memory_usage(url: str, timeout: float = TIMEOUT_SECONDS) -> tuple[int, int]:
    """(used_memory, maxmemory) in bytes from `INFO memory`; maxmemory 0 means no limit. Raises BrokerError."""
    with connected(url, timeout) as client:
        info = client.info("memory")
    try:
        return int(info["used_memory"]), int(info.get("maxmemory", 0))
    except (KeyError, TypeError, ValueError):
        raise BrokerError("INFO memory gave no used_memory") from None


def set_maxmemory(url: str, maxmemory: int, timeout: float = TIMEOUT_SECONDS) -> None:
    """CONFIG SET maxmemory on a managed broker (at run time: no restart, nothing lost). Through Sentinel, on
    every member the Sentinels see up (`members`), the master first: a replica promoted later serves with the
    same maxmemory. Raises BrokerError (naming the members not set) when one of them cannot be set."""
    if not is_sentinel(url):
        with connected(url, timeout, "configuring") as client:
            client.config_set("maxmemory", maxmemory)
        return
    failed = []
    for where in members(url, timeout):
        try:
            with instance_client(url, where, timeout) as client:
                client.config_set("maxmemory", maxmemory)
        except redis.RedisError as exc:
            failed.append(f"{where}: {_said(exc)}")
    if failed:
        raise BrokerError(f"maxmemory not set on {len(failed)} member(s): {'; '.join(failed)}")


def members(url: str, timeout: float = TIMEOUT_SECONDS, master_name: str = contract.SENTINEL_MASTER_NAME) -> list[str]:
    """`host:port` of the members of a sentinel:// broker that the first Sentinel that answers sees up: the
    master first, then each replica it does not flag down or disconnected (a member that is down cannot be
    written to now; one that comes back restarted starts from its arguments and the Secret, one that was
    frozen is found again by the next look). Raises BrokerError when no Sentinel answers."""
    errors = []
    clients = sentinel_clients(url, timeout)
    try:
        for client in clients:
            try:
                state: Any = client.sentinel_master(master_name)
                known: Any = client.sentinel_slaves(master_name)
            except redis.RedisError as exc:
                errors.append(_said(exc))
                continue
            replicas = [
                f"{one['ip']}:{one['port']}"
                for one in known
                if not (one.get("is_sdown") or one.get("is_odown") or one.get("is_disconnected"))
            ]
            return [f"{state['ip']}:{state['port']}", *replicas]
    finally:
        for client in clients:
            client.close()
    raise BrokerError(f"{describe(url, master_name)}: no Sentinel names the members: {'; '.join(errors)}")


@contextlib.contextmanager
def instance_client(
    url: str | SentinelUrl, where: str, timeout: float = TIMEOUT_SECONDS, decode_responses: bool = False
) -> Iterator[redis.Redis]:
    """A client of one member or Sentinel (`host:port`) of a sentinel:// broker (its URL, or the URL parsed),
    logged in with the URL's user and password; every socket operation bounded, nothing retried."""
    parsed = parse_sentinel(url) if isinstance(url, str) else url
    host, _, port = where.rpartition(":")
    client = redis.Redis(
        host,
        int(port),
        db=parsed.db,
        username=parsed.username,
        password=parsed.password,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        retry=Retry(NoBackoff(), MASTER_RETRIES),
        decode_responses=decode_responses,
    )
    try:
        yield client
    finally:
        client.close()
