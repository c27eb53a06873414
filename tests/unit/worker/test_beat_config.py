"""`jobqueue-worker beat`'s broker settings (jobqueue_worker.beat.broker_config): what `celery beat` alone
cannot set for a sentinel:// broker, and nothing of it for redis://."""

from __future__ import annotations

from jobqueue_worker import beat, confirm
from jobqueue_worker.app import socket_options
from jobqueue_worker.contract import SENTINEL_MASTER_NAME
from jobqueue_worker.producer import publish_retry_policy

SENTINELS = "sentinel://:s3cret@s1:26379/0;sentinel://:s3cret@s2:26379/0"


def test_a_redis_broker_gets_the_url_timeouts_and_retries_but_no_sentinel_options() -> None:
    config = beat.broker_config("redis://:pw@broker:6379/0", None, {"visibility_timeout": 60})
    assert config["broker_url"] == "redis://:pw@broker:6379/0"
    assert config["broker_transport_options"] == {"visibility_timeout": 60, **socket_options()}
    assert "broker_transport" not in config
    assert config["task_publish_retry_policy"] == publish_retry_policy("redis://:pw@broker:6379/0")


def test_a_sentinel_broker_gets_the_confirming_transport_the_master_name_and_the_sentinels_password() -> None:
    config = beat.broker_config(SENTINELS, "orders", {"visibility_timeout": 60})
    options = config["broker_transport_options"]
    assert config["broker_transport"] == confirm.TRANSPORT
    assert options["master_name"] == "orders"
    assert options["sentinel_kwargs"]["password"] == "s3cret"
    assert options["visibility_timeout"] == 60
    # A send is retried over every Sentinel for about as long as a single-URL one: longer than a failover.
    assert config["task_publish_retry_policy"]["max_retries"] == 2 * publish_retry_policy("redis://x")["max_retries"]


def test_the_master_name_is_the_jobqueues_else_the_apps_own_else_the_managed_brokers() -> None:
    own = {"master_name": "apps-own"}
    assert beat.broker_config(SENTINELS, "orders", own)["broker_transport_options"]["master_name"] == "orders"
    assert beat.broker_config(SENTINELS, None, own)["broker_transport_options"]["master_name"] == "apps-own"
    assert beat.broker_config(SENTINELS, None, None)["broker_transport_options"]["master_name"] == SENTINEL_MASTER_NAME


def test_the_apps_own_sentinel_kwargs_win_key_by_key() -> None:
    own = {"sentinel_kwargs": {"password": None}}
    kwargs = beat.broker_config(SENTINELS, None, own)["broker_transport_options"]["sentinel_kwargs"]
    assert kwargs["password"] is None
    assert kwargs["socket_timeout"] == socket_options()["socket_timeout"]
