"""Redis I/O for administering a MANAGED broker: logging in as the operator, what a restart of Redis would
lose, which passwords its default user accepts, and changing them.

The operator logs in with its own user (`jobqueue-operator`, password in `<jq>-redis-operator`), which a
user's edit of `<jq>-redis-auth` cannot break; a Redis started before that user existed is logged in to
with the Secret's URL instead, and given the user at run time (`ensure_operator_user`). Every function
opens one connection (broker.connected) and raises broker.BrokerError (BrokerAuthError for a refused
login) when Redis cannot be read; messages never hold a password.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

import redis

from jobqueue_operator import broker
from jobqueue_operator.broker_state import Held, ManagedState
from jobqueue_worker import contract

DEFAULT_USER: Final = "default"


def login(candidates: Sequence[tuple[str, bool]], timeout: float = broker.TIMEOUT_SECONDS) -> tuple[str, bool]:
    """The first (url, as_operator) of `candidates` Redis accepts. Raises BrokerAuthError when it refuses
    every one, BrokerError when it does not answer."""
    refused: broker.BrokerAuthError | None = None
    for url, as_operator in candidates:
        try:
            broker.ping(url, timeout)
        except broker.BrokerAuthError as exc:
            refused = exc
            continue
        return url, as_operator
    if refused is None:
        raise broker.BrokerError("no credentials for the broker")
    raise refused


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _accepted(reply: Any) -> frozenset[str]:
    """The `passwords` of an `ACL GETUSER` reply (a map in RESP3, a flat list in RESP2)."""
    if isinstance(reply, list):
        reply = dict(zip(reply[::2], reply[1::2], strict=False))
    if not isinstance(reply, dict):
        return frozenset()
    fields = {_text(key): value for key, value in reply.items()}
    return frozenset(_text(item) for item in fields.get("passwords") or [])


def held_tasks(client: redis.Redis, budget: int = broker.SCAN_BUDGET) -> Held:
    """Count what a restart would lose: every task queue's lists (any queue name), every dead-letter list and
    the unacked hash. A SCAN for list keys (bounded, never KEYS), then one pipeline of LLEN."""
    queues: list[str] = []
    dead: list[str] = []
    cursor, seen = 0, 0
    while True:
        cursor, page = client.scan(cursor, count=broker.SCAN_PAGE, _type="list")
        for raw in page:
            key = _text(raw)
            if key.startswith(contract.DEAD_LETTER_PREFIX):
                dead.append(key)
            elif broker.queue_of_list(key) is not None:
                queues.append(key)
        seen += broker.SCAN_PAGE
        if cursor == 0 or seen >= budget:
            break
    commands = [("LLEN", key) for key in (*queues, *dead)] + [("HLEN", contract.UNACKED)]
    replies = broker.run(client, commands)
    lengths = [int(reply or 0) for reply in replies]
    return Held(
        waiting=sum(lengths[: len(queues)]),
        in_flight=lengths[-1],
        dead_letters=sum(lengths[len(queues) : -1]),
        complete=cursor == 0,
    )


def read_managed(
    candidates: Sequence[tuple[str, bool]], count_held: bool = True, timeout: float = broker.TIMEOUT_SECONDS
) -> tuple[str, ManagedState]:
    """Log in (`candidates`: (url, as the operator's user?), the operator's first), then read the passwords
    Redis accepts, whether it persists its data and (`count_held`) the tasks it holds; the URL that logged
    in, and the state."""
    url, as_operator = login(candidates, timeout)
    with broker.connected(url, timeout) as client:
        accepted = _accepted(client.execute_command("ACL", "GETUSER", DEFAULT_USER))  # type: ignore[no-untyped-call]
        held = held_tasks(client) if count_held else None
        aof = str(client.info("persistence").get("aof_enabled", 0)) == "1"
    if not broker.is_sentinel(url):
        return url, ManagedState(as_operator, accepted, held, aof)
    every, somewhere, unread = accepted_by_instances(url, timeout)
    return url, ManagedState(as_operator, every, held, aof, somewhere, unread)


def instances(url: str, timeout: float = broker.TIMEOUT_SECONDS) -> list[str]:
    """`host:port` of every Sentinel of a sentinel:// URL and every member they see up (`broker.members`):
    each keeps its own ACL users (nothing of ACL replicates), so a password is changed on each. Raises
    BrokerError when no Sentinel answers."""
    sentinels = [f"{host}:{port}" for host, port in broker.parse_sentinel(url).sentinels]
    return [*sentinels, *broker.members(url, timeout)]


def accepted_by_instances(
    url: str, timeout: float = broker.TIMEOUT_SECONDS
) -> tuple[frozenset[str], frozenset[str], tuple[str, ...]]:
    """The password hashes every instance that answers accepts, those one of them accepts, and the instances
    that could not be read (with why)."""
    every: frozenset[str] | None = None
    somewhere: frozenset[str] = frozenset()
    unread = []
    for where in instances(url, timeout):
        try:
            with broker.instance_client(url, where, timeout) as client:
                found = _accepted(client.execute_command("ACL", "GETUSER", DEFAULT_USER))  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            unread.append(f"{where}: {type(exc).__name__}: {exc}")
            continue
        every = found if every is None else every & found
        somewhere |= found
    return every or frozenset(), somewhere, tuple(unread)


def _on_each(url: str, command: Sequence[str], timeout: float = broker.TIMEOUT_SECONDS) -> None:
    """Run one command on the broker: one Redis, or every member and Sentinel of a sentinel:// URL (each that
    answers gets it; raises BrokerError naming those that did not, after trying all: the next reconcile
    tries them again)."""
    if not broker.is_sentinel(url):
        with broker.connected(url, purpose="configuring") as client:
            client.execute_command(*command)  # type: ignore[no-untyped-call]
        return
    failed = []
    for where in instances(url, timeout):
        try:
            with broker.instance_client(url, where, timeout) as client:
                client.execute_command(*command)  # type: ignore[no-untyped-call]
        except redis.RedisError as exc:
            failed.append(f"{where}: {type(exc).__name__}: {exc}")
    if failed:
        raise broker.BrokerError(f"{' '.join(command[:2])} failed on {len(failed)} instance(s): {'; '.join(failed)}")


def ensure_operator_user(url: str, user: str, password: str, permissions: Sequence[str]) -> None:
    """Create (or reset the password of) the operator's own user, logged in with `url` (the Secret's): a
    Redis started before the user existed gets it at run time, no restart. Through Sentinel (the operator's
    Secret was made again, with a new password) the password is ADDED on every member and Sentinel, never
    reset: replication and the Sentinels still log in with the one they started with."""
    if broker.is_sentinel(url):
        _on_each(url, ("ACL", "SETUSER", user, "on", f">{password}", *permissions))
        return
    with broker.connected(url, purpose="configuring") as client:
        client.execute_command("ACL", "SETUSER", user, "on", "resetpass", f">{password}", *permissions)  # type: ignore[no-untyped-call]


def add_password(url: str, password: str) -> None:
    """The default user accepts `password` as well as those it accepted (a rotation's first step); through
    Sentinel on every member and Sentinel."""
    _on_each(url, ("ACL", "SETUSER", DEFAULT_USER, "on", f">{password}"))


def keep_only_password(url: str, password: str) -> None:
    """The default user accepts `password` only (a rotation's last step); through Sentinel on every member
    and Sentinel. Connections already logged in with another password stay open; new ones are refused."""
    _on_each(url, ("ACL", "SETUSER", DEFAULT_USER, "on", "resetpass", f">{password}"))
