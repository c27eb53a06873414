"""`jobqueue-worker deadletter ...` and `jobqueue-worker queue purge`: look after a queue in the broker.

    jobqueue-worker deadletter list    --queue high [--count 20] [--json]
    jobqueue-worker deadletter requeue --queue high (--id ID ... | --count N)
    jobqueue-worker deadletter purge   --queue high (--id ID ... | --count N | --all)
    jobqueue-worker queue purge        --queue old-queue --yes

The broker URL, key prefix and priority steps default to the JOBQUEUE_* variables a worker Pod has, so
`kubectl exec deploy/<jobqueue>-<queue>-worker -- jobqueue-worker deadletter list` needs no options.
`--count` takes the oldest entries. A requeue puts the original message back on its queue exactly as it
was sent (and clears the task's worker-loss count), atomically with removing the dead letter.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import redis
from celery import Celery

from jobqueue_worker import contract
from jobqueue_worker.brokerclient import plain_client
from jobqueue_worker.contract import DeadLetter, Env

PROG = "jobqueue-worker"
PAGE = 1000

# KEYS: dead-letter list, destination list, losses hash. ARGV: the entry, the message, its task id.
REQUEUE = """
if redis.call('LREM', KEYS[1], 1, ARGV[1]) == 0 then return 0 end
redis.call('LPUSH', KEYS[2], ARGV[2])
if ARGV[3] ~= '' then redis.call('HDEL', KEYS[3], ARGV[3]) end
return 1
"""


class CommandError(Exception):
    """A one-line error for the user; exit code 1."""


def _common(parser: argparse.ArgumentParser) -> None:
    env = os.environ
    steps = env.get(Env.PRIORITY_STEPS) or ",".join(map(str, contract.DEFAULT_PRIORITY_STEPS))
    parser.add_argument("--broker-url", default=env.get(Env.BROKER_URL), help=f"default: ${Env.BROKER_URL}")
    parser.add_argument("--key-prefix", default=env.get(Env.KEY_PREFIX, ""), help=f"default: ${Env.KEY_PREFIX}")
    parser.add_argument("--priority-steps", default=steps, help=f"default: ${Env.PRIORITY_STEPS} or 0,3,6,9")
    parser.add_argument("--queue", default=env.get(Env.QUEUE), help=f"default: ${Env.QUEUE}")


def _selection(parser: argparse.ArgumentParser, allow_all: bool) -> None:
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", action="append", dest="ids", metavar="ID", help="a dead letter's id (repeatable)")
    group.add_argument("--count", type=_positive, help="the N oldest dead letters")
    if allow_all:
        group.add_argument("--all", action="store_true", help="every dead letter of the queue")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog=PROG, description=__doc__.splitlines()[0] if __doc__ else None)
    groups = top.add_subparsers(dest="group", required=True)
    letters = groups.add_parser("deadletter", help="list, requeue or purge a queue's dead letters")
    actions = letters.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="newest first")
    _common(listing)
    listing.add_argument("--count", type=_positive, default=20, help="at most this many (default 20)")
    listing.add_argument("--json", action="store_true", help="one JSON dead letter per line, message included")
    requeue = actions.add_parser("requeue", help="send the original messages again, oldest first")
    _common(requeue)
    _selection(requeue, allow_all=False)
    purge = actions.add_parser("purge", help="delete dead letters for good")
    _common(purge)
    _selection(purge, allow_all=True)
    queue = groups.add_parser("queue", help="act on a queue's waiting messages")
    queue_actions = queue.add_subparsers(dest="action", required=True)
    purge_queue = queue_actions.add_parser("purge", help="delete every waiting message of a queue (not the running)")
    _common(purge_queue)
    purge_queue.add_argument("--yes", action="store_true", required=True, help="yes, delete them")
    return top


Entry = tuple[bytes, DeadLetter | None]
"""A dead-letter list's raw entry and what it decodes to (None: unreadable)."""


def decoded(raw: bytes) -> Entry:
    try:
        return raw, DeadLetter.from_json(raw)
    except ValueError:
        return raw, None


def entries(client: redis.Redis, key: str) -> Iterator[Entry]:
    """Every entry of a dead-letter list, newest first, read a page at a time."""
    start = 0
    while True:
        page: list[bytes] = client.lrange(key, start, start + PAGE - 1)  # type: ignore[assignment]
        yield from (decoded(raw) for raw in page)
        if len(page) < PAGE:
            return
        start += PAGE


RAN_NOTE = "it ran: a requeue runs it again"
"""Said of every dead letter whose task completed (contract.RAN_REASONS), in `list` and `requeue`."""


def line(letter: DeadLetter, now: float) -> str:
    age = max(0.0, now - letter.at)
    when = f"{age:.0f}s" if age < 120 else f"{age / 60:.0f}m" if age < 7200 else f"{age / 3600:.0f}h"
    exception = letter.exception.splitlines()[0] if letter.exception else ""
    task = f"{letter.task or '-'}[{letter.task_id or '-'}]"
    ran = f"  ({RAN_NOTE})" if letter.reason in contract.RAN_REASONS else ""
    return f"{letter.id}  {when:>5} ago  {letter.reason.value:<17}  {task}  {exception}{ran}"


def _list(client: redis.Redis, args: argparse.Namespace) -> int:
    key = contract.dead_letter_key(args.queue, args.key_prefix)
    total = int(client.llen(key))
    now = time.time()
    shown = 0
    for raw, letter in entries(client, key):
        if shown >= args.count:
            break
        shown += 1
        if args.json:
            print(raw.decode(errors="replace"))
        else:
            print(line(letter, now) if letter else f"(unreadable entry) {raw[:80]!r}")
    if not args.json:
        print(f"{shown} of {total} dead letters of {args.queue}")
    return 0


def _chosen(client: redis.Redis, key: str, args: argparse.Namespace) -> list[Entry]:
    """The entries `--id` or `--count` name, oldest first; an unknown id is an error before anything is done."""
    if args.ids:
        wanted = set(args.ids)
        found = [(raw, letter) for raw, letter in entries(client, key) if letter and letter.id in wanted]
        missing = wanted - {letter.id for _, letter in found if letter}
        if missing:
            raise CommandError(f"no dead letter {', '.join(sorted(missing))} in {args.queue}")
        return list(reversed(found))
    oldest: list[bytes] = client.lrange(key, -args.count, -1)  # type: ignore[assignment]
    return [decoded(raw) for raw in reversed(oldest)]


def requeue(client: redis.Redis, letter: DeadLetter, raw: bytes, steps: Sequence[int], prefix: str) -> bool:
    """Move one dead letter's message back to the list of its priority step; False if it was gone."""
    destination = contract.list_for_priority(letter.queue, contract.message_priority(letter.message), steps, prefix)
    keys = [contract.dead_letter_key(letter.queue, prefix), destination, contract.losses_key(letter.queue, prefix)]
    moved = client.eval(REQUEUE, len(keys), *keys, raw, json.dumps(letter.message), letter.task_id)
    return bool(moved)


def _requeue(client: redis.Redis, args: argparse.Namespace) -> int:
    key = contract.dead_letter_key(args.queue, args.key_prefix)
    steps = _steps(args.priority_steps)
    moved = 0
    for raw, letter in _chosen(client, key, args):
        if letter is None:
            print(f"{PROG}: skipped an unreadable dead letter (it stays; purge it with --count)", file=sys.stderr)
            continue
        if requeue(client, letter, raw, steps, args.key_prefix):
            moved += 1
            ran = f" ({RAN_NOTE})" if letter.reason in contract.RAN_REASONS else ""
            print(f"requeued {letter.id}: {letter.task or 'message'}[{letter.task_id}] to {letter.queue}{ran}")
    print(f"{moved} dead letters requeued")
    return 0


def _purge(client: redis.Redis, args: argparse.Namespace) -> int:
    key = contract.dead_letter_key(args.queue, args.key_prefix)
    if args.all:
        removed = int(client.llen(key))
        client.delete(key)
    elif args.count:
        before = int(client.llen(key))
        client.ltrim(key, 0, -args.count - 1)  # the oldest are at the tail
        removed = min(args.count, before)
    else:
        removed = 0
        for raw, _ in _chosen(client, key, args):
            removed += int(client.execute_command("LREM", key, 1, raw))  # type: ignore[no-untyped-call]
    print(f"{removed} dead letters of {args.queue} purged")
    return 0


def purge_queue(app: Celery, queue: str) -> int:
    """Delete every waiting message of `queue` with kombu's own purge (each priority list of the app's
    steps, under its key prefix); returns how many there were."""
    with app.connection_for_write() as connection:
        return int(connection.default_channel.queue_purge(queue) or 0)


def _steps(text: str) -> list[int]:
    try:
        return [int(step) for step in text.split(",")]
    except ValueError:
        raise CommandError(f"--priority-steps {text!r}: expected integers such as 0,3,6,9") from None


ACTIONS: dict[tuple[str, str], Any] = {
    ("deadletter", "list"): _list,
    ("deadletter", "requeue"): _requeue,
    ("deadletter", "purge"): _purge,
}


def main(argv: Sequence[str]) -> int:
    """Entry point of the subcommands; one line on stderr and exit 1 on any failure."""
    args = parser().parse_args(argv)
    if not args.broker_url or not args.queue:
        print(f"{PROG}: --broker-url and --queue are required (or {Env.BROKER_URL} and {Env.QUEUE})", file=sys.stderr)
        return 2
    from jobqueue_worker import producer

    try:
        app = producer.producer_app(
            args.broker_url,
            key_prefix=args.key_prefix,
            priority_steps=_steps(args.priority_steps),
            master_name=os.environ.get(Env.BROKER_MASTER_NAME) or contract.SENTINEL_MASTER_NAME,
        )
    except CommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    try:
        if (args.group, args.action) == ("queue", "purge"):
            print(f"{purge_queue(app, args.queue)} waiting messages of {args.queue} purged")
            return 0
        with plain_client(app) as client:
            return int(ACTIONS[args.group, args.action](client, args))
    except CommandError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # the broker's trouble: one line, never a traceback
        print(f"{PROG}: {producer.broker_problem(args.broker_url, exc)}", file=sys.stderr)
        return 1
    finally:
        app.close()
