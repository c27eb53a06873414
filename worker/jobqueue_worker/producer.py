"""Send built-in tasks to a queue: `jobqueue-worker send`, and the functions the tests and demo use.

    jobqueue-worker send --queue high --task sleep --arg seconds=0.5 --count 100 --priorities 0,9 --wait 60

The broker URL, key prefix and priority steps default to the same JOBQUEUE_* variables the worker
reads, so a producer next to a worker needs only the queue. Values of `--arg` are JSON (`seconds=0.5`,
`message='"boom"'`), or taken as plain strings when they are not JSON.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import os
import socket
import sys
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Final
from urllib.parse import urlsplit

import redis
from celery import Celery
from celery.result import AsyncResult

import jobqueue_worker.sent_time  # noqa: F401  # stamps the send time, for the queue-wait histogram
from jobqueue_worker import confirm, contract, failover, records, tasks
from jobqueue_worker.app import transport_options
from jobqueue_worker.contract import (
    DEFAULT_PRIORITY_STEPS,
    DEFAULT_VISIBILITY_TIMEOUT_SECONDS,
    SENTINEL_MASTER_NAME,
    Env,
)

PROG = "jobqueue-worker send"
KINDS = ("noop", "sleep", "burn_cpu", "allocate", "fail", "flaky", "crash")


PUBLISH_RETRY_POLICY = {"max_retries": 12, "interval_start": 0.2, "interval_step": 0.5, "interval_max": 2.0}
"""About 20 s of retries for each send (kombu's default is under a second): a broker restart goes unnoticed."""


CONNECT_RETRIES_SECONDS: Final = 20
"""How long kombu tries to (re)connect before a send gives up (its transport option `connect_retries_timeout`;
without it Celery's `broker_connection_timeout`, 4 s: less than a Sentinel failover, so sends made while the
Sentinels still named the old master failed with "connection refused")."""


def publish_retry_policy(broker_url: str) -> dict[str, float]:
    """PUBLISH_RETRY_POLICY for this URL. kombu counts a retry per URL tried but waits only after a round over
    every `;`-separated URL (e.g. each Sentinel), so the retries scale with them: still about 20 s, more than
    a Sentinel failover takes (about 7 s with the managed broker's settings)."""
    urls = max(1, len([entry for entry in broker_url.split(";") if entry.strip()]))
    return {**PUBLISH_RETRY_POLICY, "max_retries": PUBLISH_RETRY_POLICY["max_retries"] * urls}


def producer_app(
    broker_url: str,
    result_backend: str | None = None,
    key_prefix: str = "",
    priority_steps: Sequence[int] = DEFAULT_PRIORITY_STEPS,
    master_name: str = SENTINEL_MASTER_NAME,
) -> Celery:
    """A Celery app configured like the workers' (same key prefix and priority steps; `master_name` for
    sentinel:// URLs), for sending. On a sentinel:// broker each send waits for a replica to confirm the task
    (`confirm.py`): a send reported done survives a failover."""
    app = Celery("jobqueue-producer", set_as_current=False)
    if broker_url.startswith("sentinel://"):
        app.conf.broker_transport = confirm.TRANSPORT
    backend = result_backend or broker_url
    steps, timeout = priority_steps, DEFAULT_VISIBILITY_TIMEOUT_SECONDS
    app.conf.update(
        broker_url=broker_url,
        result_backend=backend,
        broker_transport_options={
            **transport_options(timeout, steps, key_prefix, broker_url, master_name),
            "connect_retries_timeout": CONNECT_RETRIES_SECONDS,
        },
        result_backend_transport_options=transport_options(timeout, steps, key_prefix, backend, master_name),
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        task_send_sent_event=True,
        task_publish_retry_policy=publish_retry_policy(broker_url),
    )
    return app


def send(
    app: Celery,
    queue: str,
    kind: str,
    count: int,
    *,
    priorities: Sequence[int | None] = (None,),
    run_id: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    ignore_result: bool = False,
) -> list[AsyncResult]:
    """Send `count` tasks of one built-in kind, cycling through `priorities`; returns their results.

    `ignore_result`: no result is stored, and the producer does not subscribe to one per task."""
    if kind not in KINDS:
        raise ValueError(f"unknown task kind {kind!r}; one of {', '.join(KINDS)}")
    name = f"{tasks.__name__}.{kind}"
    arguments = {**(kwargs or {}), **({"run_id": run_id} if run_id else {})}
    cycle = itertools.cycle(priorities)
    with app.producer_or_acquire() as producer:
        return [
            confirm.while_no_replica(
                functools.partial(
                    app.send_task,
                    name,
                    kwargs=arguments,
                    queue=queue,
                    priority=next(cycle),
                    producer=producer,
                    ignore_result=ignore_result,
                )
            )
            for _ in range(count)
        ]


NAME_RESOLUTION_ERRORS = (
    "name or service not known",
    "temporary failure in name resolution",
    "nodename nor servname provided",
    "no address associated with hostname",
    "name does not resolve",
)


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _unresolved(error: BaseException) -> bool:
    return isinstance(error, socket.gaierror) or any(text in str(error).lower() for text in NAME_RESOLUTION_ERRORS)


def broker_problem(url: str, exc: BaseException) -> str:
    """One line saying why the broker cannot be used, and the fix when the host does not resolve here."""
    where = contract.redacted(url)
    if any(_unresolved(error) for error in _chain(exc)):
        host = urlsplit(url.split(";")[0]).hostname or "?"
        service, _, rest = host.partition(".")
        namespace = f"-n {rest.split('.')[0]} " if rest else ""
        return (
            f"cannot reach the broker {where}: the host {host} does not resolve from here (a Service name only "
            f"resolves inside the cluster); run the command in a worker Pod (kubectl exec deploy/<worker> -- "
            f"jobqueue-worker ...), or forward the Service (kubectl {namespace}port-forward svc/{service} 6379) "
            f"and pass --broker-url with 127.0.0.1:6379; on the local cluster: "
            f"python -m jobqueue_devenv exec -- jobqueue-worker ..."
        )
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"cannot reach the broker {where}: {text}"


def done_count(app: Celery, run_id: str, key_prefix: str = "") -> int:
    """How many distinct tasks of a run have finished successfully so far."""
    return len(records.read(app.backend.client, run_id, records.DONE, key_prefix))


def parse_arg(text: str) -> tuple[str, Any]:
    name, sep, raw = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    try:
        return name, json.loads(raw)
    except json.JSONDecodeError:
        return name, raw


def _parse_priorities(text: str) -> list[int | None]:
    return [int(part) for part in text.split(",")] if text else [None]


def main(argv: Sequence[str] | None = None) -> int:
    """`jobqueue-worker send`: send a burst, optionally wait until every task is done."""
    env = os.environ
    parser = argparse.ArgumentParser(prog="jobqueue-worker send", description=__doc__.splitlines()[0])
    parser.add_argument("--broker-url", default=env.get(Env.BROKER_URL), help=f"default: ${Env.BROKER_URL}")
    parser.add_argument("--result-backend", default=env.get(Env.RESULT_BACKEND) or None)
    parser.add_argument("--key-prefix", default=env.get(Env.KEY_PREFIX, ""))
    parser.add_argument(
        "--master-name",
        default=env.get(Env.BROKER_MASTER_NAME) or SENTINEL_MASTER_NAME,
        help=f"a sentinel:// broker's master name (default: ${Env.BROKER_MASTER_NAME}, else {SENTINEL_MASTER_NAME})",
    )
    parser.add_argument(
        "--priority-steps", default=env.get(Env.PRIORITY_STEPS) or ",".join(map(str, DEFAULT_PRIORITY_STEPS))
    )
    parser.add_argument("--queue", default=env.get(Env.QUEUE), help=f"default: ${Env.QUEUE}")
    parser.add_argument("--task", choices=KINDS, default="noop")
    parser.add_argument("--arg", action="append", type=parse_arg, default=[], help="task keyword argument NAME=VALUE")
    parser.add_argument("--count", type=int, default=1)
    parser.add_argument("--priorities", type=_parse_priorities, default=[None], help="e.g. 0,9: cycled over the tasks")
    parser.add_argument("--run-id", default=None, help="default: a new one, printed")
    parser.add_argument("--wait", type=float, default=0, help="seconds to wait for every task to be done")
    args = parser.parse_args(argv)
    if not args.broker_url or not args.queue:
        parser.error(f"--broker-url and --queue are required (or {Env.BROKER_URL} and {Env.QUEUE})")
    run_id = args.run_id or uuid.uuid4().hex
    steps = [int(step) for step in args.priority_steps.split(",")]
    app = producer_app(args.broker_url, args.result_backend, args.key_prefix, steps, args.master_name)
    try:
        with failover.watching(app):
            return _send_and_wait(app, args, run_id)
    except Exception as exc:  # the broker's trouble (after the retries): one line, never a traceback
        print(f"{PROG}: {broker_problem(args.broker_url, exc)}", file=sys.stderr)
        return 1
    finally:
        app.close()


def _send_and_wait(app: Celery, args: argparse.Namespace, run_id: str) -> int:
    for url in {args.broker_url, args.result_backend or args.broker_url}:
        resolve(url)  # a host that does not resolve fails at once, not after the retries
    started = time.monotonic()
    kwargs = dict(args.arg)
    send(
        app,
        args.queue,
        args.task,
        args.count,
        priorities=args.priorities,
        run_id=run_id,
        kwargs=kwargs,
        ignore_result=True,
    )
    print(f"sent {args.count} {args.task} tasks to {args.queue} (run {run_id})")
    if not args.wait:
        return 0
    deadline = started + args.wait
    done, error = 0, None
    while True:
        try:
            done, error = done_count(app, run_id, args.key_prefix), None
        except (redis.RedisError, OSError) as exc:  # Redis restarting: keep the last count, try again
            error = exc
        if done >= args.count or time.monotonic() >= deadline:
            break
        time.sleep(0.2)
    elapsed = time.monotonic() - started
    print(f"{done}/{args.count} done in {elapsed:.1f}s ({done / elapsed:.1f} tasks/s)")
    if error is not None and done < args.count:
        print(f"{PROG}: {broker_problem(args.result_backend or args.broker_url, error)}", file=sys.stderr)
    return 0 if done >= args.count else 1


def resolve(url: str) -> None:
    """Look up the broker hosts of a redis://, rediss:// or sentinel:// URL; raises socket.gaierror."""
    for part in url.split(";"):
        parts = urlsplit(part)
        if parts.hostname:
            socket.getaddrinfo(parts.hostname, None)


if __name__ == "__main__":
    sys.exit(main())
