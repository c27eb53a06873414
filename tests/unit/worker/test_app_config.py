"""How the worker turns settings into Celery configuration, and loads the user's app."""

from __future__ import annotations

import re
import socket

import pytest
from celery import Celery

from jobqueue_worker import app as app_module
from jobqueue_worker.settings import SettingsError, load_settings

ENV = {
    "JOBQUEUE_APP": "jobqueue_worker.demo:app",
    "JOBQUEUE_QUEUE": "high",
    "JOBQUEUE_BROKER_URL": "redis://:pw@redis:6379/0",
}


def test_safe_settings_are_always_on() -> None:
    config = app_module.celery_config(load_settings(ENV))
    assert config["task_acks_late"] is True
    assert config["task_reject_on_worker_lost"] is True
    assert config["worker_cancel_long_running_tasks_on_connection_loss"] is True
    assert config["accept_content"] == ["json"]
    assert config["result_accept_content"] == ["json"]
    assert (config["task_serializer"], config["result_serializer"], config["event_serializer"]) == ("json",) * 3
    assert (config["worker_send_task_events"], config["task_send_sent_event"]) == (True, True)
    assert config["worker_soft_shutdown_timeout"] == 30
    assert config["worker_enable_soft_shutdown_on_idle"] is True
    assert config["worker_prefetch_multiplier"] == 1
    assert config["result_backend"] == ENV["JOBQUEUE_BROKER_URL"]
    assert config["result_expires"] == 86400


def test_zero_means_no_limit() -> None:
    config = app_module.celery_config(load_settings(ENV))
    assert config["task_time_limit"] is None
    assert config["task_soft_time_limit"] is None
    assert config["worker_max_tasks_per_child"] is None
    assert config["worker_max_memory_per_child"] is None


def test_limits_and_transport_options_come_from_the_environment() -> None:
    settings = load_settings(
        {
            **ENV,
            "JOBQUEUE_TIME_LIMIT_SECONDS": "300",
            "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS": "240",
            "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS": "900",
            "JOBQUEUE_MAX_TASKS_PER_CHILD": "100",
            "JOBQUEUE_MAX_MEMORY_PER_CHILD_KB": "204800",
            "JOBQUEUE_PRIORITY_STEPS": "0,9",
            "JOBQUEUE_KEY_PREFIX": "media:",
            "JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS": "0",
        }
    )
    config = app_module.celery_config(settings)
    assert (config["task_time_limit"], config["task_soft_time_limit"]) == (300, 240)
    assert (config["worker_max_tasks_per_child"], config["worker_max_memory_per_child"]) == (100, 204800)
    expected = {
        "visibility_timeout": 900,
        "priority_steps": [0, 9],
        "queue_order_strategy": "priority",
        "socket_connect_timeout": 5,
        "socket_timeout": 10,
        "socket_keepalive": True,
        "socket_keepalive_options": {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3},
        "global_keyprefix": "media:",
    }
    assert config["broker_transport_options"] == expected
    assert config["result_backend_transport_options"] == expected
    assert config["worker_enable_soft_shutdown_on_idle"] is False
    assert (config["redis_socket_connect_timeout"], config["redis_socket_timeout"]) == (5, 10)
    assert (config["result_backend_always_retry"], config["result_backend_max_retries"]) == (True, 2)


def test_the_users_transport_options_are_kept_but_ours_win() -> None:
    user = Celery("user", set_as_current=False)
    user.conf.broker_transport_options = {"master_name": "mymaster", "visibility_timeout": 10}
    app_module.configure(user, load_settings(ENV))
    assert user.conf.broker_transport_options["master_name"] == "mymaster"
    assert user.conf.broker_transport_options["visibility_timeout"] == 3600
    assert user.conf.task_acks_late is True
    assert user.conf.broker_url == ENV["JOBQUEUE_BROKER_URL"]


def test_load_app_finds_the_demo_app_with_its_tasks() -> None:
    found = app_module.load_app("jobqueue_worker.demo:app")
    assert isinstance(found, Celery)
    assert {"jobqueue_worker.tasks.noop", "jobqueue_worker.tasks.flaky"} <= set(found.tasks)


@pytest.mark.parametrize(
    ("spec", "fragment"),
    [
        ("no_such_module_anywhere:app", "cannot load it: ModuleNotFoundError"),
        ("jobqueue_worker.demo:nothing", "cannot load it: AttributeError"),
        ("jobqueue_worker", "cannot load it: AttributeError"),  # a bare module without an app
        ("jobqueue_worker.tasks:noop", "not a Celery app"),
    ],
)
def test_load_app_failures_are_one_line_settings_errors(spec: str, fragment: str) -> None:
    with pytest.raises(SettingsError) as caught:
        app_module.load_app(spec)
    assert str(caught.value).startswith(f"JOBQUEUE_APP={spec!r}: ")
    assert fragment in str(caught.value)
    assert "\n" not in str(caught.value)


def test_the_apps_own_result_backend_and_time_limits_are_kept_unless_the_jobqueue_sets_them() -> None:
    user = Celery("user", set_as_current=False, backend="rpc://")
    user.conf.update(task_time_limit=120, task_soft_time_limit=100, task_routes={"a": {"queue": "b"}})
    app_module.configure(user, load_settings(ENV))
    assert user.conf.result_backend == "rpc://"
    assert (user.conf.task_time_limit, user.conf.task_soft_time_limit) == (120, 100)
    assert user.conf.task_routes == {"a": {"queue": "b"}}
    assert user.conf.broker_url == ENV["JOBQUEUE_BROKER_URL"]  # the JobQueue's broker, always

    chosen = Celery("chosen", set_as_current=False, backend="rpc://")
    chosen.conf.task_time_limit = 120
    jobqueue = {**ENV, "JOBQUEUE_RESULT_BACKEND": "redis://results:6379/1", "JOBQUEUE_TIME_LIMIT_SECONDS": "60"}
    app_module.configure(chosen, load_settings(jobqueue))
    assert chosen.conf.result_backend == "redis://results:6379/1"
    assert chosen.conf.task_time_limit == 60

    bare = Celery("bare", set_as_current=False)
    app_module.configure(bare, load_settings(ENV))
    assert bare.conf.result_backend == ENV["JOBQUEUE_BROKER_URL"]  # an app without one gets the broker's Redis


@pytest.mark.parametrize(
    ("conf", "fragment"),
    [
        ({"task_time_limit": 7200}, "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS (3600) must be greater than the app's"),
        ({"task_soft_time_limit": 3600}, "the app's task_soft_time_limit (3600)"),
        ({"task_time_limit": 60, "task_soft_time_limit": 90}, "task_soft_time_limit (90) must be less than"),
    ],
)
def test_an_apps_time_limit_that_does_not_fit_the_visibility_timeout_is_refused(
    conf: dict[str, int], fragment: str
) -> None:
    user = Celery("user", set_as_current=False)
    user.conf.update(conf)
    with pytest.raises(SettingsError, match=re.escape(fragment)):
        app_module.configure(user, load_settings(ENV))
