"""Load the user's Celery app (what `celery -A` loads) and impose the settings the contract promises.

The user's own configuration stays (routes, task options, result backend, time limits, ...), except what
the operator owns (docs/worker-contract.md, "What the worker sets"): the broker connection, delivery
safety, serialization, pool sizing and shutdown. Three settings are the app's unless the JobQueue gives
them (`APP_DEFAULTS`): the result backend and the two time limits.
"""

from __future__ import annotations

import functools
import socket
from collections.abc import Mapping, Sequence
from typing import Any, Final, Literal
from urllib.parse import unquote, urlsplit

from celery import Celery
from celery.app.utils import find_app
from celery.utils.imports import import_from_cwd

from jobqueue_worker.contract import SENTINEL_MASTER_NAME, Env
from jobqueue_worker.settings import SettingsError, WorkerSettings


def load_app(spec: str) -> Celery:
    """Import `module[:attribute]` like `celery -A`; any failure becomes a one-line SettingsError."""
    module_name, _, attribute = spec.partition(":")
    try:
        if attribute:  # find_app would report a missing attribute as a missing module named "module:attribute"
            found = functools.reduce(getattr, attribute.split("."), import_from_cwd(module_name))
        else:  # a bare module: let Celery look for its `app` or `celery` attribute
            found = find_app(module_name)
    except Exception as exc:  # the user's module can raise anything while importing
        raise SettingsError(f"{Env.APP}={spec!r}: cannot load it: {type(exc).__name__}: {exc}") from None
    if not isinstance(found, Celery):
        raise SettingsError(f"{Env.APP}={spec!r}: is a {type(found).__name__}, not a Celery app")
    return found


# Connecting to a Service whose Redis Pod is not running is not refused, it hangs until the kernel gives
# up (about two minutes): bound each attempt so the retry loop goes on and a shutdown is noticed.
CONNECT_TIMEOUT_SECONDS = 5
# A command on a connection whose peer vanished without closing it would wait forever. Must stay well
# above the transport's BRPOP timeout (1 s), or an idle consumer would time out its own BRPOP.
SOCKET_TIMEOUT_SECONDS = 10
# The socket timeout does not cover the consumer's BRPOP: the event loop waits for it to become readable,
# and a broker whose node died (its address black-holed, nothing closes the connection) never makes it so:
# the worker would wait for hours (the kernel's keepalive starts after 2 h). Probing an idle connection
# after 10 s, 3 times 5 s apart, ends a dead one within 25 s, and the consumer reconnects (through the
# Service, to wherever the broker now runs).
KEEPALIVE_OPTIONS: Final = {socket.TCP_KEEPIDLE: 10, socket.TCP_KEEPINTVL: 5, socket.TCP_KEEPCNT: 3}
# Attempts after the first to store a result, when the result backend's connection broke.
RESULT_STORE_RETRIES: Final = 2


def socket_options() -> dict[str, Any]:
    """redis-py's connection options for every broker connection: to Redis and to the Sentinels alike."""
    return {
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_keepalive": True,
        "socket_keepalive_options": dict(KEEPALIVE_OPTIONS),
    }


def transport_options(
    visibility_timeout: int,
    priority_steps: Sequence[int],
    key_prefix: str,
    url: str = "",
    master_name: str = SENTINEL_MASTER_NAME,
) -> dict[str, Any]:
    """Redis transport options shared by broker and result backend (visibility timeout must be on both);
    for a sentinel:// `url`, also what kombu and Celery need to find the master (`sentinel_options`)."""
    options: dict[str, Any] = {
        "visibility_timeout": visibility_timeout,
        "priority_steps": list(priority_steps),
        "queue_order_strategy": "priority",
        **socket_options(),
    }
    if key_prefix:
        options["global_keyprefix"] = key_prefix
    return {**options, **sentinel_options(url, master_name)}


def sentinel_options(url: str, master_name: str, own_kwargs: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """For a sentinel:// URL: the master's name, and how to talk to the Sentinels (`sentinel_kwargs`); nothing
    for other URLs.

    kombu's SentinelChannel and Celery's SentinelBackend take both from the transport options, not the URL.
    `sentinel_kwargs` replaces, rather than adds to, redis-py's defaults for Sentinel connections, so it carries
    the socket timeouts and keepalive probes again (without them, asking a frozen Sentinel would hang), and the
    URL's password: the managed broker's Sentinels require the same one as Redis (`requirepass`). An app's own
    `sentinel_kwargs` win key by key, e.g. `{"password": None}` for Sentinels without a password."""
    if not url.startswith("sentinel://"):
        return {}
    password = urlsplit(url.split(";")[0]).password
    kwargs = {**socket_options(), "password": unquote(password) if password else None, **(own_kwargs or {})}
    return {"master_name": master_name, "sentinel_kwargs": kwargs}


def master_name(settings: WorkerSettings, own_options: Mapping[str, Any] | None) -> str:
    """The Sentinel master name: the JobQueue's (JOBQUEUE_BROKER_MASTER_NAME) wins over the app's own
    transport option `master_name`; with neither, the managed broker's (contract.SENTINEL_MASTER_NAME)."""
    return settings.broker_master_name or str((own_options or {}).get("master_name") or SENTINEL_MASTER_NAME)


APP_DEFAULTS = ("result_backend", "task_time_limit", "task_soft_time_limit")
"""What the app may configure for itself: kept unless the JobQueue sets it (JOBQUEUE_RESULT_BACKEND,
JOBQUEUE_TIME_LIMIT_SECONDS, JOBQUEUE_SOFT_TIME_LIMIT_SECONDS). The result backend falls back to the
broker's Redis only when the app has none."""
KEPT = ("broker_transport_options", "result_backend_transport_options", *APP_DEFAULTS)
"""What `configure` reads from the app before applying `celery_config`."""


ResultBackendOrigin = Literal["jobqueue", "app", "broker"]


def result_backend(settings: WorkerSettings, app_backend: Any) -> tuple[Any, ResultBackendOrigin]:
    """The result backend the worker uses and whose it is: the JobQueue's (JOBQUEUE_RESULT_BACKEND) wins over
    the app's own `result_backend`; with neither, the broker's Redis. The fix for one that cannot be reached
    differs (resultcheck.py)."""
    if settings.result_backend:
        return settings.result_backend, "jobqueue"
    if app_backend:
        return app_backend, "app"
    return settings.broker_url, "broker"


def celery_config(settings: WorkerSettings, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Celery settings to apply over the app's `current` ones (the KEPT keys): its transport options
    are merged under ours (`master_name` says when its own Sentinel master name stays), its APP_DEFAULTS kept
    unless the JobQueue sets them."""
    current = current or {}
    ours = transport_options(settings.visibility_timeout_seconds, settings.priority_steps, settings.key_prefix)
    own_broker = current.get("broker_transport_options") or {}
    own_result = current.get("result_backend_transport_options") or {}
    backend = result_backend(settings, current.get("result_backend"))[0]
    broker_sentinel = sentinel_options(
        settings.broker_url, master_name(settings, own_broker), own_broker.get("sentinel_kwargs")
    )
    result_url = backend if isinstance(backend, str) else ""
    result_sentinel = sentinel_options(result_url, master_name(settings, own_result), own_result.get("sentinel_kwargs"))
    hard = settings.time_limit_seconds or current.get("task_time_limit") or None
    soft = settings.soft_time_limit_seconds or current.get("task_soft_time_limit") or None
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {**own_broker, **ours, **broker_sentinel},
        "broker_connection_retry_on_startup": True,
        "result_backend": backend,
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "redis_socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "redis_socket_keepalive": True,
        # A result store that failed on a broken connection (its broker's node lost power) is tried again on
        # a fresh one: Celery retries only its idempotent backend calls (store, read, forget), never a
        # pipeline such as a chord's counter, which a connection-level retry_on_timeout would run twice.
        "result_backend_always_retry": True,
        "result_backend_max_retries": RESULT_STORE_RETRIES,
        "result_backend_transport_options": {**own_result, **ours, **result_sentinel},
        "result_expires": settings.result_expires_seconds,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_time_limit": hard,
        "task_soft_time_limit": soft,
        "worker_concurrency": settings.concurrency,
        "worker_pool": settings.pool.value,
        "worker_prefetch_multiplier": settings.prefetch_multiplier,
        "worker_max_tasks_per_child": settings.max_tasks_per_child or None,
        "worker_max_memory_per_child": settings.max_memory_per_child_kb or None,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_soft_shutdown_timeout": settings.soft_shutdown_timeout_seconds,
        "worker_enable_soft_shutdown_on_idle": settings.soft_shutdown_timeout_seconds > 0,
        "worker_send_task_events": True,
        "task_send_sent_event": True,
    }


def configure(app: Celery, settings: WorkerSettings) -> ResultBackendOrigin:
    """Apply `celery_config` to the app, on top of whatever the user's module configured; returns whose
    result backend it now uses.

    Raises SettingsError when a time limit the app keeps does not fit the JobQueue's visibility timeout
    (Redis would deliver a task still running a second time) or the soft limit is not below the hard one."""
    current = {key: app.conf.get(key) for key in KEPT}
    config = celery_config(settings, current)
    check_limits(config, settings.visibility_timeout_seconds)
    app.conf.update(config)
    return result_backend(settings, current.get("result_backend"))[1]


def check_limits(config: dict[str, Any], visibility_timeout: int) -> None:
    hard, soft = config["task_time_limit"], config["task_soft_time_limit"]
    if hard and soft and soft >= hard:
        raise SettingsError(f"the task_soft_time_limit ({soft:g}) must be less than task_time_limit ({hard:g})")
    longest = hard or soft
    if longest and visibility_timeout <= longest:
        limit = "task_time_limit" if hard else "task_soft_time_limit"
        raise SettingsError(
            f"{Env.VISIBILITY_TIMEOUT_SECONDS} ({visibility_timeout}) must be greater than the app's {limit} "
            f"({longest:g}), or Redis redelivers tasks that are still running: set the queue's "
            f"visibilityTimeoutSeconds (or timeLimitSeconds) in the JobQueue"
        )
