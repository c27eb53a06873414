"""Load the user's Celery app (what `celery -A` loads) and impose the settings the contract promises.

The user's own configuration stays (routes, task options, ...), except the settings below, which the
operator owns: delivery safety, serialization, limits and the broker/result connection.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from celery import Celery
from celery.app.utils import find_app
from celery.utils.imports import import_from_cwd

from jobqueue_worker.contract import Env
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


def transport_options(visibility_timeout: int, priority_steps: Sequence[int], key_prefix: str) -> dict[str, Any]:
    """Redis transport options shared by broker and result backend (visibility timeout must be on both)."""
    options: dict[str, Any] = {
        "visibility_timeout": visibility_timeout,
        "priority_steps": list(priority_steps),
        "queue_order_strategy": "priority",
        "socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "socket_keepalive": True,
    }
    if key_prefix:
        options["global_keyprefix"] = key_prefix
    return options


def celery_config(settings: WorkerSettings, current: dict[str, Any] | None = None) -> dict[str, Any]:
    """The Celery settings to apply; `current` transport options (e.g. a Sentinel master_name) are kept."""
    current = current or {}
    ours = transport_options(settings.visibility_timeout_seconds, settings.priority_steps, settings.key_prefix)
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": {**(current.get("broker_transport_options") or {}), **ours},
        "broker_connection_retry_on_startup": True,
        "result_backend": settings.result_backend_url,
        "redis_socket_connect_timeout": CONNECT_TIMEOUT_SECONDS,
        "redis_socket_timeout": SOCKET_TIMEOUT_SECONDS,
        "redis_socket_keepalive": True,
        "result_backend_transport_options": {**(current.get("result_backend_transport_options") or {}), **ours},
        "result_expires": settings.result_expires_seconds,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_time_limit": settings.time_limit_seconds or None,
        "task_soft_time_limit": settings.soft_time_limit_seconds or None,
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


def configure(app: Celery, settings: WorkerSettings) -> None:
    """Apply `celery_config` to the app, on top of whatever the user's module configured."""
    current = {key: app.conf.get(key) for key in ("broker_transport_options", "result_backend_transport_options")}
    app.conf.update(celery_config(settings, current))
