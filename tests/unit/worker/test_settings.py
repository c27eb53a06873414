"""The environment -> WorkerSettings contract: defaults, parsing, and one-line errors naming the variable."""

from __future__ import annotations

import pytest

from jobqueue_worker.settings import Pool, SettingsError, load_settings

REQUIRED = {
    "JOBQUEUE_APP": "media.celery:app",
    "JOBQUEUE_QUEUE": "high",
    "JOBQUEUE_BROKER_URL": "redis://:secret@redis:6379/0",
}


def error_for(**changes: str) -> str:
    env = {**REQUIRED, **changes}
    with pytest.raises(SettingsError) as caught:
        load_settings({key: value for key, value in env.items() if value != "<unset>"})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_defaults_follow_the_contract() -> None:
    settings = load_settings(REQUIRED)
    assert settings.app == "media.celery:app"
    assert settings.queue == "high"
    assert settings.name == ""
    assert settings.result_backend_url == REQUIRED["JOBQUEUE_BROKER_URL"]
    assert settings.result_expires_seconds == 86400
    assert settings.concurrency == 1
    assert settings.pool is Pool.PREFORK
    assert settings.prefetch_multiplier == 1
    assert (settings.max_tasks_per_child, settings.max_memory_per_child_kb) == (0, 0)
    assert (settings.soft_time_limit_seconds, settings.time_limit_seconds) == (0, 0)
    assert settings.visibility_timeout_seconds == 3600
    assert settings.priority_steps == (0, 3, 6, 9)
    assert settings.key_prefix == ""
    assert settings.metrics_port == 9808
    assert settings.soft_shutdown_timeout_seconds == 30


def test_every_variable_is_read() -> None:
    settings = load_settings(
        {
            **REQUIRED,
            "JOBQUEUE_NAME": "media",
            "JOBQUEUE_RESULT_BACKEND": "redis://results:6379/1",
            "JOBQUEUE_RESULT_EXPIRES_SECONDS": "3600",
            "JOBQUEUE_CONCURRENCY": "4",
            "JOBQUEUE_POOL": "threads",
            "JOBQUEUE_PREFETCH_MULTIPLIER": "8",
            "JOBQUEUE_MAX_TASKS_PER_CHILD": "100",
            "JOBQUEUE_MAX_MEMORY_PER_CHILD_KB": "204800",
            "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS": "240",
            "JOBQUEUE_TIME_LIMIT_SECONDS": "300",
            "JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS": "600",
            "JOBQUEUE_PRIORITY_STEPS": "0, 5,9",
            "JOBQUEUE_KEY_PREFIX": "media:",
            "JOBQUEUE_SOFT_SHUTDOWN_TIMEOUT_SECONDS": "10",
            "JOBQUEUE_METRICS_PORT": "9100",
            "POD_NAME": "media-high-abc",
            "POD_NAMESPACE": "apps",
        }
    )
    assert settings.name == "media"
    assert settings.result_backend_url == "redis://results:6379/1"
    assert settings.result_expires_seconds == 3600
    assert settings.concurrency == 4
    assert settings.pool is Pool.THREADS
    assert settings.prefetch_multiplier == 8
    assert (settings.max_tasks_per_child, settings.max_memory_per_child_kb) == (100, 204800)
    assert (settings.soft_time_limit_seconds, settings.time_limit_seconds) == (240, 300)
    assert settings.visibility_timeout_seconds == 600
    assert settings.priority_steps == (0, 5, 9)
    assert settings.key_prefix == "media:"
    assert settings.soft_shutdown_timeout_seconds == 10
    assert settings.metrics_port == 9100
    assert settings.nodename == "high@media-high-abc"
    assert settings.pod_namespace == "apps"


def test_empty_values_count_as_unset() -> None:
    settings = load_settings({**REQUIRED, "JOBQUEUE_RESULT_BACKEND": "", "JOBQUEUE_CONCURRENCY": ""})
    assert settings.result_backend_url == REQUIRED["JOBQUEUE_BROKER_URL"]
    assert settings.concurrency == 1


@pytest.mark.parametrize("variable", sorted(REQUIRED))
def test_a_missing_required_variable_is_named(variable: str) -> None:
    assert error_for(**{variable: "<unset>"}) == f"{variable} is required"


@pytest.mark.parametrize(
    ("variable", "value", "shown"),
    [
        ("JOBQUEUE_CONCURRENCY", "many", "'many'"),
        ("JOBQUEUE_CONCURRENCY", "0", "'0'"),
        ("JOBQUEUE_POOL", "forkserver", "'forkserver'"),
        ("JOBQUEUE_PREFETCH_MULTIPLIER", "0", "'0'"),
        ("JOBQUEUE_MAX_MEMORY_PER_CHILD_KB", "-1", "'-1'"),
        ("JOBQUEUE_TIME_LIMIT_SECONDS", "soon", "'soon'"),
        ("JOBQUEUE_METRICS_PORT", "70000", "'70000'"),
        ("JOBQUEUE_PRIORITY_STEPS", "0,x,9", "'x'"),  # the bad element
        ("JOBQUEUE_APP", "not a module", "'not a module'"),
        ("JOBQUEUE_QUEUE", "has space", "'has space'"),
    ],
)
def test_a_bad_value_is_named_with_the_value(variable: str, value: str, shown: str) -> None:
    assert error_for(**{variable: value}).startswith(f"{variable}={shown}: ")


def test_the_broker_url_scheme_is_checked_without_echoing_the_password() -> None:
    message = error_for(JOBQUEUE_BROKER_URL="amqp://user:hunter2@rabbit//")
    assert "JOBQUEUE_BROKER_URL must start with" in message
    assert "hunter2" not in message


def test_visibility_timeout_must_exceed_the_hard_time_limit() -> None:
    message = error_for(JOBQUEUE_TIME_LIMIT_SECONDS="3600")
    assert message.startswith("JOBQUEUE_VISIBILITY_TIMEOUT_SECONDS (3600) must be greater than JOBQUEUE_TIME_LIMIT")
    assert load_settings({**REQUIRED, "JOBQUEUE_TIME_LIMIT_SECONDS": "3599"}).time_limit_seconds == 3599


def test_without_a_hard_limit_the_soft_limit_bounds_the_visibility_timeout() -> None:
    message = error_for(JOBQUEUE_SOFT_TIME_LIMIT_SECONDS="7200")
    assert "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS (7200)" in message


def test_soft_limit_must_be_below_the_hard_limit() -> None:
    message = error_for(JOBQUEUE_SOFT_TIME_LIMIT_SECONDS="300", JOBQUEUE_TIME_LIMIT_SECONDS="300")
    assert message == "JOBQUEUE_SOFT_TIME_LIMIT_SECONDS (300) must be less than JOBQUEUE_TIME_LIMIT_SECONDS (300)"


def test_priority_steps_must_ascend() -> None:
    assert "JOBQUEUE_PRIORITY_STEPS must be distinct" in error_for(JOBQUEUE_PRIORITY_STEPS="9,3,0")


def test_several_errors_stay_on_one_line() -> None:
    message = error_for(JOBQUEUE_QUEUE="<unset>", JOBQUEUE_CONCURRENCY="x")
    assert "JOBQUEUE_QUEUE is required" in message
    assert "JOBQUEUE_CONCURRENCY='x'" in message
