"""`kubectl jobqueue deadletters NAME QUEUE [list|requeue|purge] [OPTIONS]`: a queue's dead letters.

It talks to the JobQueue's broker from outside the cluster, as `send` does (the URL from the JobQueue's
Secret; a managed broker's Pod IP where its Service name does not resolve; `--broker-url` otherwise), so
it works at zero workers: exactly when a queue whose every task failed has scaled down and the
`DeadLetters` Event arrives, and `kubectl exec` into a worker has nothing to exec into. Listing,
requeueing and purging are the worker's own commands (`jobqueue-worker deadletter ...`,
docs/worker-contract.md), run here with the JobQueue's broker and the queue's priority steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from jobqueue_kubectl import sending
from jobqueue_kubectl.cluster import Body, Cluster
from jobqueue_kubectl.errors import PluginError
from jobqueue_worker import admin
from jobqueue_worker.contract import priority_steps

ACTIONS = ("list", "requeue", "purge")
DEFAULT_PRIORITY_LEVELS = 4
"""For a queue the spec no longer lists (its dead letters outlive it), as the CRD's default."""


def options(action: str, count: int | None, ids: Sequence[str], every: bool, json: bool) -> list[str]:
    """The plugin's options as `jobqueue-worker deadletter ACTION` takes them; a one-line error for a choice
    the action does not take (before anything is read or changed)."""
    if count is not None and count < 1:
        raise PluginError(f"--count must be at least 1, not {count}")
    chosen = sum([count is not None, bool(ids), every])
    if action == "list" and (ids or every):
        raise PluginError("list takes --count and --json, not --id or --all")
    if action != "list" and json:
        raise PluginError(f"{action} does not take --json")
    if action == "requeue" and (chosen != 1 or every):
        raise PluginError("requeue needs exactly one of --id ID (repeatable) or --count N (the N oldest)")
    if action == "purge" and chosen != 1:
        raise PluginError("purge needs exactly one of --id ID (repeatable), --count N (the N oldest) or --all")
    argv = ["--count", str(count)] if count is not None else []
    for letter_id in ids:
        argv += ["--id", letter_id]
    return argv + (["--all"] if every else []) + (["--json"] if json else [])


def worker_argv(action: str, url: str, queue: str, steps: Sequence[int], options: Sequence[str]) -> list[str]:
    """The `jobqueue-worker` arguments that do `action` on `queue`'s dead letters in the broker at `url`."""
    return [
        "deadletter",
        action,
        "--broker-url",
        url,
        "--priority-steps",
        ",".join(str(step) for step in steps),
        "--queue",
        queue,
        *options,
    ]


def run(
    api: Cluster, body: Body, queue: str, action: str, options: Sequence[str], override_url: str | None = None
) -> int:
    """Do `action` (list, requeue, purge) with `options` (`--count`, `--id`, `--all`, `--json`); its exit code."""
    spec = body.get("spec") or {}
    levels = next(
        (int(q.get("priorityLevels", DEFAULT_PRIORITY_LEVELS)) for q in spec.get("queues") or [] if q["name"] == queue),
        DEFAULT_PRIORITY_LEVELS,
    )
    url, master_name = sending.broker(api, body)
    url = override_url or sending.reachable_url(api, body, url)
    sending.ping(url, master_name)  # the worker's command below asks for JOBQUEUE_BROKER_MASTER_NAME's master
    return admin.main(worker_argv(action, url, queue, priority_steps(levels), options))
