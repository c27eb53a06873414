"""Redis I/O for a Sentinel-managed broker's members: ask every Sentinel of a sentinel:// URL about the
master name (SENTINEL MASTER, SENTINEL REPLICAS), the best informed one whether a failover could happen
(SENTINEL CKQUORUM), then the master it names about its replicas (INFO replication, CONFIG GET
min-replicas-*). `broker_replication` decides what the answers mean.

Every socket operation is bounded by the timeout, each Sentinel asked once: a look costs at most about
(Sentinels + 2) timeouts when everything is down, a few milliseconds when all is well.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from jobqueue_operator import broker
from jobqueue_operator.broker_replication import Members, address, master_down, newest, replicas
from jobqueue_worker import contract


def _asked(client: redis.Redis, master_name: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    state = client.sentinel_master(master_name)
    known = client.sentinel_slaves(master_name)
    assert isinstance(state, dict)
    assert isinstance(known, list)
    return state, [dict(replica) for replica in known]


def _quorum(client: redis.Redis, master_name: str) -> str | None:
    """`SENTINEL CKQUORUM`'s refusal (None: the Sentinels can agree on and authorize a failover, or the
    Sentinel stopped answering since: unknown, not a refusal)."""
    try:
        client.execute_command("SENTINEL", "CKQUORUM", master_name)  # type: ignore[no-untyped-call]
    except redis.ResponseError as exc:
        return str(exc)
    except redis.RedisError:
        return None
    return None


def _master_info(url: broker.SentinelUrl, where: str, timeout: float) -> tuple[dict[str, Any], int | None, int | None]:
    """The master's INFO replication and its min-replicas-to-write and min-replicas-max-lag (None where
    CONFIG is refused to this user). Raises redis.RedisError when it cannot be read."""
    with broker.instance_client(url, where, timeout, decode_responses=True) as client:
        info = dict(client.info("replication"))
        try:
            config = client.config_get("min-replicas-*")
        except redis.ResponseError:
            config = {}
    to_write, max_lag = config.get("min-replicas-to-write"), config.get("min-replicas-max-lag")
    return (
        info,
        None if to_write is None else int(to_write),
        None if max_lag is None else int(max_lag),
    )


def _ago(at: float, milliseconds: Any) -> float | None:
    """The wall-clock time `milliseconds` (a Sentinel's "ms since ...") before `at`."""
    return None if milliseconds is None else at - int(milliseconds) / 1000


def read(
    url: str, master_name: str = contract.SENTINEL_MASTER_NAME, timeout: float = broker.TIMEOUT_SECONDS
) -> Members:
    """One look at the broker's members. A Sentinel or a master that does not answer is part of the answer,
    not an error; raises BrokerError only for a URL that is not a well-formed sentinel:// one."""
    parsed = broker.parse_sentinel(url)
    at, count = time.time(), len(parsed.sentinels)
    answers: list[tuple[redis.Redis, dict[str, Any], list[dict[str, Any]]]] = []
    unknown: list[str] = []
    errors: list[str] = []
    clients = broker.sentinel_clients(url, timeout)
    try:
        for client, (host, port) in zip(clients, parsed.sentinels, strict=True):
            try:
                state, known = _asked(client, master_name)
            except redis.ResponseError as exc:  # it answers, but does not monitor that name
                unknown.append(f"{host}:{port}: {exc}")
            except redis.RedisError as exc:
                errors.append(f"{host}:{port}: {type(exc).__name__}: {exc}")
            else:
                answers.append((client, state, known))
        if not answers:
            if unknown:
                return Members(at, master_name, count, answering=len(unknown))
            return Members(at, master_name, count, error="; ".join(errors))
        best = newest([state for _, state, _ in answers])
        client, state, known = next(answer for answer in answers if answer[1] is best)
        quorum = _quorum(client, master_name)
    finally:
        for client in clients:
            client.close()
    where = address(state)
    problem = master_down(state)
    info: dict[str, Any] | None = None
    to_write = max_lag = None
    if problem is None:
        try:
            info, to_write, max_lag = _master_info(parsed, where, timeout)
        except redis.RedisError as exc:
            problem = f"it does not answer ({type(exc).__name__}: {exc})"
        else:
            if info.get("role") != "master":
                problem = f"it answers as a {info.get('role')} (a failover under way)"
    good = None if info is None or "min_slaves_good_slaves" not in info else int(info["min_slaves_good_slaves"])
    return Members(
        at,
        master_name,
        count,
        answering=len(answers) + len(unknown),
        master=where,
        epoch=int(state.get("config-epoch") or 0),
        last_answer=_ago(at, state.get("last-ok-ping-reply")),
        since=_ago(at, state.get("role-reported-time")),
        master_problem=problem,
        quorum_problem=quorum,
        replicas=replicas(known, info) if problem is None else (),
        master_offset=None if info is None else int(info.get("master_repl_offset") or 0),
        good_replicas=good,
        min_replicas_to_write=to_write,
        max_lag_seconds=max_lag,
    )
