"""A message kombu popped is never dropped because recording it as unacknowledged failed (patches.py).

kombu pops a message from its list, then records it in `unacked` on a pooled connection; a failure of that
second write (a connection to a failed-over, frozen master, or any connection error) used to lose the
message. Real Redis and kombu's real Redis transport with the worker's transport options; only the
failure itself is injected, into the pipelines that write `unacked` and, for the last case, the give-back.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from kombu import Connection, Exchange, Queue
from kombu.transport import redis as kombu_redis

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_worker import app as worker_app
from jobqueue_worker import contract, patches

Writes = Callable[[tuple[str, ...]], bool]


@pytest.fixture
def broken(monkeypatch: pytest.MonkeyPatch) -> Callable[[Writes, int], None]:
    """`broken(which, times)`: the next `times` pipelines holding a command `which` accepts fail with a
    connection error before they reach Redis (what a connection to a frozen old master does after its
    socket timeout, or a cut connection at once)."""

    def arm(which: Writes, times: int) -> None:
        execute = redis.client.Pipeline.execute
        left = [times]

        def failing(self: redis.client.Pipeline, raise_on_error: bool = True) -> Any:
            if left[0] > 0 and any(which(tuple(map(str, args))) for args, _ in self.command_stack):
                left[0] -= 1
                self.reset()
                raise redis.exceptions.ConnectionError("injected: connection to the old master lost")
            return execute(self, raise_on_error)

        monkeypatch.setattr(redis.client.Pipeline, "execute", failing)

    return arm


def records_unacked(command: tuple[str, ...]) -> bool:
    return command[0] == "HSET" and command[1] == contract.UNACKED


def gives_back(command: tuple[str, ...]) -> bool:
    return command[0] == "RPUSH"


@pytest.fixture
def connection(redis_server: RedisServer) -> Iterator[Connection]:
    patches.install()
    options = worker_app.transport_options(300, contract.DEFAULT_PRIORITY_STEPS, "")
    with Connection(redis_server.url, transport_options=options) as conn:
        yield conn


def send(conn: Connection, queue: str, body: str) -> Queue:
    declared = Queue(queue, Exchange(queue, "direct"), routing_key=queue)
    with conn.Producer() as producer:
        producer.publish(body, exchange=declared.exchange, routing_key=queue, declare=[declared])
    return declared


def body_of(payload: dict[str, Any]) -> str:
    """A stored kombu payload's body (kombu keeps it base64-encoded)."""
    return base64.b64decode(payload["body"]).decode()


def waiting(client: redis.Redis, queue: str) -> list[str]:
    return [body_of(json.loads(raw)) for raw in client.lrange(queue, 0, -1)]


def unacked(client: redis.Redis) -> list[str]:
    return [body_of(json.loads(raw)[0]) for raw in client.hvals(contract.UNACKED)]


def test_the_patch_is_installed_on_kombus_redis_qos(connection: Connection) -> None:
    assert getattr(kombu_redis.QoS, "_jobqueue_append_patched", False)


def test_a_failed_unacked_record_is_written_again_on_a_new_connection_and_the_message_delivered(
    connection: Connection, redis_server: RedisServer, queue_name: str, broken: Callable[[Writes, int], None]
) -> None:
    body = json.dumps("recorded-on-retry")
    send(connection, queue_name, body)
    broken(records_unacked, 1)
    message = connection.default_channel.basic_get(queue_name, no_ack=False)
    assert message is not None
    assert message.body == body.encode()
    with redis_server.client() as client:
        assert unacked(client) == [body]  # held, so a lost worker's redelivery finds it
        assert waiting(client, queue_name) == []
    message.ack()


def test_a_message_whose_record_fails_twice_goes_back_to_its_queue_not_lost(
    connection: Connection, redis_server: RedisServer, queue_name: str, broken: Callable[[Writes, int], None]
) -> None:
    body = json.dumps("given-back")
    send(connection, queue_name, body)
    broken(records_unacked, 2)
    with pytest.raises(redis.exceptions.ConnectionError):
        connection.default_channel.basic_get(queue_name, no_ack=False)
    with redis_server.client() as client:
        assert waiting(client, queue_name) == [body]
        assert unacked(client) == []
        [raw] = client.lrange(queue_name, 0, -1)
    assert json.loads(raw)["headers"]["redelivered"] is True  # kombu's own restore mark


def test_a_message_that_cannot_be_recorded_or_given_back_is_reported_lost(
    connection: Connection,
    redis_server: RedisServer,
    queue_name: str,
    broken: Callable[[Writes, int], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    send(connection, queue_name, json.dumps("lost"))
    broken(lambda command: records_unacked(command) or gives_back(command), 3)
    with pytest.raises(redis.exceptions.ConnectionError):
        connection.default_channel.basic_get(queue_name, no_ack=False)
    assert any("is lost" in record.getMessage() for record in caplog.records), caplog.text
