"""How a sentinel:// broker reaches kombu and Celery: the master name, the Sentinels' password and timeouts
(`app.sentinel_options`), the producer's confirming transport, and the failover watch's pure parts."""

from __future__ import annotations

import os
import socket

import pytest
import redis.sentinel
from celery import Celery

from jobqueue_worker import app as app_module
from jobqueue_worker import confirm, failover, producer
from jobqueue_worker.contract import SENTINEL_MASTER_NAME
from jobqueue_worker.settings import SettingsError, load_settings

URL = "sentinel://:p%40ss@s1:26379/0;sentinel://:p%40ss@s2:26380/0;sentinel://:p%40ss@s3/0"
ENV = {"JOBQUEUE_APP": "jobqueue_worker.demo:app", "JOBQUEUE_QUEUE": "high", "JOBQUEUE_BROKER_URL": URL}
KEEPALIVE = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}


def test_a_sentinel_broker_gets_the_master_name_and_the_sentinels_password_and_timeouts() -> None:
    config = app_module.celery_config(load_settings(ENV))
    for options in (config["broker_transport_options"], config["result_backend_transport_options"]):
        assert options["master_name"] == SENTINEL_MASTER_NAME
        assert options["sentinel_kwargs"] == {
            "password": "p@ss",  # unquoted, as kombu reads the URL's
            "socket_connect_timeout": 5,
            "socket_timeout": 10,
            "socket_keepalive": True,
            "socket_keepalive_options": KEEPALIVE,
        }
        assert options["socket_keepalive_options"] == KEEPALIVE  # the master's connections keep theirs
    assert config["result_backend"] == URL


def test_the_jobqueues_master_name_wins_over_the_apps_and_the_apps_over_the_default() -> None:
    user = Celery("user", set_as_current=False)
    user.conf.broker_transport_options = {"master_name": "mymaster"}
    app_module.configure(user, load_settings(ENV))
    assert user.conf.broker_transport_options["master_name"] == "mymaster"
    assert user.conf.result_backend_transport_options["master_name"] == SENTINEL_MASTER_NAME

    user = Celery("user", set_as_current=False)
    user.conf.broker_transport_options = {"master_name": "mymaster"}
    app_module.configure(user, load_settings({**ENV, "JOBQUEUE_BROKER_MASTER_NAME": "media"}))
    assert user.conf.broker_transport_options["master_name"] == "media"
    assert user.conf.result_backend_transport_options["master_name"] == "media"


def test_the_apps_own_sentinel_kwargs_win_key_by_key() -> None:
    user = Celery("user", set_as_current=False)
    user.conf.broker_transport_options = {"sentinel_kwargs": {"password": None}}
    app_module.configure(user, load_settings(ENV))
    kwargs = user.conf.broker_transport_options["sentinel_kwargs"]
    assert kwargs["password"] is None
    assert kwargs["socket_timeout"] == 10


def test_other_brokers_and_backends_get_no_sentinel_options() -> None:
    config = app_module.celery_config(load_settings({**ENV, "JOBQUEUE_BROKER_URL": "redis://:pw@redis:6379/0"}))
    assert "master_name" not in config["broker_transport_options"]
    assert "sentinel_kwargs" not in config["broker_transport_options"]
    config = app_module.celery_config(load_settings({**ENV, "JOBQUEUE_RESULT_BACKEND": "redis://:pw@results/1"}))
    assert "sentinel_kwargs" in config["broker_transport_options"]
    assert "sentinel_kwargs" not in config["result_backend_transport_options"]


def test_a_master_name_with_a_space_is_refused_naming_the_variable() -> None:
    with pytest.raises(SettingsError, match=r"^JOBQUEUE_BROKER_MASTER_NAME='my master': "):
        load_settings({**ENV, "JOBQUEUE_BROKER_MASTER_NAME": "my master"})


def test_the_producer_confirms_its_sends_on_a_sentinel_broker_only() -> None:
    sentinel = producer.producer_app(URL, master_name="media")
    plain = producer.producer_app("redis://:pw@redis:6379/0")
    try:
        assert sentinel.conf.broker_transport == confirm.TRANSPORT
        assert sentinel.conf.broker_transport_options["master_name"] == "media"
        assert sentinel.conf.result_backend_transport_options["sentinel_kwargs"]["password"] == "p@ss"
        with sentinel.connection_for_write() as connection:  # built, not connected
            assert type(connection.transport) is confirm.ConfirmingSentinelTransport
        assert not plain.conf.broker_transport
    finally:
        sentinel.close()
        plain.close()


def test_a_send_retries_through_each_sentinel_for_as_long_as_through_one_redis() -> None:
    one = producer.publish_retry_policy("redis://:pw@redis:6379/0")
    three = producer.publish_retry_policy(URL)
    assert three["max_retries"] == 3 * one["max_retries"]
    assert {**three, "max_retries": 0} == {**one, "max_retries": 0}


def test_a_send_keeps_reconnecting_for_longer_than_a_failover_takes() -> None:
    app = producer.producer_app(URL)
    try:
        with app.connection_for_write() as connection:  # built, not connected
            assert connection._extract_failover_opts()["timeout"] == producer.CONNECT_RETRIES_SECONDS
    finally:
        app.close()
    assert producer.CONNECT_RETRIES_SECONDS > 15  # the bound on a failover's interruption


def test_a_send_on_a_channel_a_lost_connection_closed_is_a_connection_error_kombu_retries() -> None:
    channel = confirm.ConfirmingSentinelChannel.__new__(confirm.ConfirmingSentinelChannel)
    channel.connection = None  # what kombu's Channel.close leaves
    with pytest.raises(redis.exceptions.ConnectionError):
        channel._put("q", {"properties": {}})
    assert redis.exceptions.ConnectionError in confirm.ConfirmingSentinelTransport.connection_errors


def test_the_sentinels_of_a_url() -> None:
    assert failover.sentinel_addresses(URL) == [("s1", 26379), ("s2", 26380), ("s3", 26379)]


@pytest.mark.parametrize(
    ("previous", "current", "old"),
    [
        (("a", 1), ("b", 2), ("a", 1)),
        (("a", 1), ("a", 1), None),
        (None, ("b", 2), None),  # nothing known before: nothing to cut
        (("a", 1), None, None),  # the Sentinels could not be asked: keep the connections
    ],
)
def test_only_a_master_the_sentinels_replaced_is_cut_off(
    previous: tuple[str, int] | None, current: tuple[str, int] | None, old: tuple[str, int] | None
) -> None:
    assert failover.moved_from(previous, current) == old


def test_cut_shuts_down_this_processs_connections_to_one_address_only() -> None:
    with socket.create_server(("127.0.0.1", 0)) as first, socket.create_server(("127.0.0.1", 0)) as second:
        to_first = socket.create_connection(first.getsockname())
        to_second = socket.create_connection(second.getsockname())
        accepted, _ = first.accept()
        try:
            assert failover.cut(("127.0.0.1", first.getsockname()[1])) == 1
            assert accepted.recv(1) == b""  # the peer sees the connection closed
            with pytest.raises(BrokenPipeError):
                to_first.sendall(b"x" * 100000)
            to_second.sendall(b"still open")
        finally:
            for sock in (to_first, to_second, accepted):
                sock.close()


def test_no_watch_for_other_brokers() -> None:
    plain = producer.producer_app("redis://:pw@redis:6379/0")
    try:
        assert failover.MasterWatch.for_app(plain) is None
    finally:
        plain.close()


def test_a_send_the_master_refused_for_want_of_replicas_is_sent_again() -> None:
    calls: list[int] = []

    def send() -> str:
        calls.append(1)
        if len(calls) < 3:
            try:
                raise RuntimeError("Command # 1 (SADD ...) of pipeline caused error: NOREPLICAS Not enough good")
            except RuntimeError as exc:
                raise OSError("wrapped by kombu") from exc
        return "sent"

    assert confirm.while_no_replica(send) == "sent"
    assert len(calls) == 3


def test_other_errors_and_a_lasting_refusal_are_raised() -> None:
    def refused() -> None:
        raise RuntimeError("NOREPLICAS Not enough good replicas to write.")

    def broken() -> None:
        raise RuntimeError("something else")

    with pytest.raises(RuntimeError, match="NOREPLICAS"):
        confirm.while_no_replica(refused, wait=0)
    with pytest.raises(RuntimeError, match="something else"):
        confirm.while_no_replica(broken)


def test_looking_for_connections_leaves_no_descriptor_behind() -> None:
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        assert failover.cut(("127.0.0.1", 9)) == 0
    assert len(os.listdir("/proc/self/fd")) == before


def test_connections_to_a_replaced_master_are_cut_at_every_ask_not_only_at_the_change(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A connection the first cut missed (or made through a Sentinel that still named the old master) would
    otherwise stay on the old master: one lost a task (docs/broker.md, "A task lost in the worker")."""
    with socket.create_server(("127.0.0.1", 0)) as old, socket.create_server(("127.0.0.1", 0)) as new:
        old_master, new_master = ("127.0.0.1", old.getsockname()[1]), ("127.0.0.1", new.getsockname()[1])
        answers = iter([old_master, new_master, new_master, None, new_master])
        watch = failover.MasterWatch(redis.sentinel.Sentinel([]), SENTINEL_MASTER_NAME)  # type: ignore[no-untyped-call]
        monkeypatch.setattr(watch, "_ask", lambda: next(answers))
        assert watch.once() is None  # the first answer: nothing known before, nothing cut
        assert watch.once() == old_master  # the change: cut (nothing open yet)
        late = socket.create_connection(old_master)
        to_new = socket.create_connection(new_master)
        accepted, _ = old.accept()
        accepted.settimeout(10)  # without the cut, fail instead of waiting forever
        try:
            assert watch.once() is None  # no change, yet the late connection to the old master is cut
            assert accepted.recv(1) == b""
            again = socket.create_connection(old_master)
            accepted_again, _ = old.accept()
            accepted_again.settimeout(10)
            assert watch.once() is None  # the Sentinels could not be asked: nothing is cut
            again.sendall(b"x")
            assert accepted_again.recv(1) == b"x"
            assert watch.once() is None  # they answer again: cut
            assert accepted_again.recv(1) == b""
            to_new.sendall(b"still open")  # the new master's connection is never cut
            for sock in (again, accepted_again):
                sock.close()
        finally:
            for sock in (late, to_new, accepted):
                sock.close()
