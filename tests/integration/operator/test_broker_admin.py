"""broker_admin against a real redis-server: the operator's own user given at run time to a Redis started
without it, the tasks a restart would lose counted in every kind of list, and a password rotation that
never refuses a connection already logged in."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_operator import broker, broker_admin, broker_password
from jobqueue_operator.broker_state import Held
from jobqueue_worker import contract

OPERATOR = "jobqueue-operator"


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis as the operator made managed brokers before it had its own user: `requirepass` only."""
    with RedisServer.running(tmp_path / "redis", password="old-password") as running:
        yield running


def _url(server: RedisServer, password: str, user: str = "") -> str:
    return f"redis://{user}:{password}@127.0.0.1:{server.port}/0"


def _task(queue: str) -> bytes:
    return json.dumps(
        {"headers": {"task": "t", "id": "1"}, "properties": {"delivery_info": {"routing_key": queue}}}
    ).encode()


def test_a_redis_without_the_operators_user_is_read_with_the_secrets_url_and_given_the_user(
    server: RedisServer,
) -> None:
    own, secret = _url(server, "op-password", OPERATOR), _url(server, "old-password")
    url, state = broker_admin.read_managed([(own, True), (secret, False)])
    assert (url, state.as_operator) == (secret, False)
    assert state.accepted == {broker_password.digest("old-password")}
    assert not state.aof

    broker_admin.ensure_operator_user(secret, OPERATOR, "op-password", ("~*", "&*", "+@all"))
    url, state = broker_admin.read_managed([(own, True), (secret, False)])
    assert (url, state.as_operator) == (own, True)


def test_every_task_a_restart_would_lose_is_counted_and_nothing_else(server: RedisServer) -> None:
    client = server.client()
    client.lpush("high", _task("high"), _task("high"))
    client.lpush(f"high{contract.PRIORITY_SEPARATOR}3", _task("high"))
    client.lpush("celery", _task("celery"))  # a queue the spec does not list: lost all the same
    client.hset(contract.UNACKED, "tag-1", json.dumps([_task("high").decode(), "", "high"]))
    client.lpush(contract.dead_letter_key("high"), "{}")
    client.lpush(f"abc{contract.REPLY_SUFFIX}", "a reply, not a task")
    client.sadd(f"{contract.BINDINGS_PREFIX}high", "binding")
    _, state = broker_admin.read_managed([(server.url, False)])
    assert state.held == Held(waiting=4, in_flight=1, dead_letters=1, complete=True)
    _, uncounted = broker_admin.read_managed([(server.url, False)], count_held=False)
    assert uncounted.held is None


def test_a_rotation_adds_then_drops_and_a_logged_in_connection_stays(server: RedisServer) -> None:
    old, new = _url(server, "old-password"), _url(server, "new-password")
    logged_in = redis.Redis.from_url(old)
    logged_in.ping()
    broker_admin.add_password(old, "new-password")
    redis.Redis.from_url(new).ping()
    redis.Redis.from_url(old).ping()  # both, during the rotation
    _, state = broker_admin.read_managed([(new, False)])
    assert state.accepted == {broker_password.digest("old-password"), broker_password.digest("new-password")}

    broker_admin.keep_only_password(new, "new-password")
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(old).ping()
    assert logged_in.lpush("high", _task("high")) == 1  # connections already logged in keep working
    with pytest.raises(broker.BrokerAuthError):
        broker_admin.login([(old, False)])
