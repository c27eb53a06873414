"""`kubectl jobqueue`: the JobQueues of a cluster from the command line.

    kubectl jobqueue status NAME [-n NAMESPACE]          per queue: waiting, in flight, oldest, workers, last scaling;
                                                         draining and unserved queues; paused; a stale status
    kubectl jobqueue send NAME QUEUE TASK [--arg k=v] [--count N] [--priority P]
    kubectl jobqueue top [-n NAMESPACE | -A] [--interval S] [--once | --watch]   (into a pipe: one snapshot)
    kubectl jobqueue deadletters NAME QUEUE [list | requeue | purge] [--count N | --id ID | --all] [--json]
                                                         a queue's dead letters, from the broker (no worker needed)
    kubectl jobqueue completion bash

Installed as the console script `kubectl-jobqueue`: on PATH, kubectl finds it as `kubectl jobqueue`.
Every failure is one line on stderr (`error: ...`) and exit code 1; bad arguments exit 2. A reader that
stops early (`| head`) ends any command quietly, exit code 0.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

from jobqueue_kubectl import cluster, deadletters, render, sending
from jobqueue_kubectl.errors import PluginError
from jobqueue_operator.status import OBSERVED_REFRESH_SECONDS

COMPLETION = """# bash completion for kubectl jobqueue (and kubectl-jobqueue):
#   source <(kubectl jobqueue completion bash)
_kubectl_jobqueue() {
  local cur=${COMP_WORDS[COMP_CWORD]} words=("${COMP_WORDS[@]}")
  [[ ${words[0]} == kubectl ]] && words=("${words[@]:1}") && ((COMP_CWORD--))
  if ((COMP_CWORD == 1)); then COMPREPLY=($(compgen -W "status send top deadletters completion" -- "$cur")); return; fi
  case ${words[1]} in
    status|send|deadletters) if ((COMP_CWORD == 2)); then
        COMPREPLY=($(compgen -W "$(kubectl get jobqueues -o name 2>/dev/null | cut -d/ -f2)" -- "$cur")); fi ;;
    completion) COMPREPLY=($(compgen -W "bash" -- "$cur")) ;;
  esac
}
complete -F _kubectl_jobqueue kubectl-jobqueue
"""


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl jobqueue", description=__doc__.splitlines()[0])
    connection = argparse.ArgumentParser(add_help=False)
    connection.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG or ~/.kube/config)")
    connection.add_argument("--context", help="kubeconfig context (default: the current one)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def namespaced(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("-n", "--namespace", help="default: the context's namespace")

    def staleness(sub: argparse.ArgumentParser) -> None:
        sub.add_argument("--stale-after", type=float, default=render.STALE_AFTER_SECONDS, metavar="SECONDS",
                         help="warn when the operator last observed a JobQueue longer ago than this "
                         f"(default {render.STALE_AFTER_SECONDS:g}: it refreshes the time at least every "
                         f"{OBSERVED_REFRESH_SECONDS} s)")  # fmt: skip

    status = commands.add_parser(
        "status", parents=[connection], help="one JobQueue, queue by queue, and its recent Events"
    )
    status.add_argument("name")
    namespaced(status)
    status.add_argument("--events", type=int, default=8, help="recent Events to show (default 8)")
    staleness(status)

    send = commands.add_parser(
        "send", parents=[connection], help="send tasks to a queue through the JobQueue's broker, to try it out"
    )
    send.add_argument("name")
    send.add_argument("queue")
    send.add_argument("task", help="a task name the workers know, e.g. jobqueue_worker.tasks.sleep")
    namespaced(send)
    send.add_argument("--arg", action="append", default=[], type=sending.parse_arg, metavar="NAME=VALUE",
                      help="task keyword argument; VALUE is JSON, or else a string")  # fmt: skip
    send.add_argument("--count", type=int, default=1)
    send.add_argument("--priority", type=int, default=None, help="Celery priority 0 (first) to 9")
    send.add_argument("--broker-url", help="reach the broker here instead (e.g. through kubectl port-forward)")

    top = commands.add_parser(
        "top", parents=[connection], help="every JobQueue: redrawn on a terminal, one snapshot into a pipe"
    )
    namespaced(top)
    top.add_argument("-A", "--all-namespaces", action="store_true")
    top.add_argument("--interval", type=float, default=2.0)
    staleness(top)
    shown = top.add_mutually_exclusive_group()
    shown.add_argument("--once", action="store_true", help="print once and exit (the default into a pipe)")
    shown.add_argument("-w", "--watch", action="store_true",
                       help="keep printing when stdout is not a terminal: a plain block every --interval")  # fmt: skip

    letters = commands.add_parser(
        "deadletters",
        parents=[connection],
        help="list, requeue or purge a queue's dead letters through the broker (works at zero workers)",
        description="As `jobqueue-worker deadletter ACTION`: list [--count N] [--json] (newest first), "
        "requeue (--id ID ... | --count N) (the oldest N), purge (--id ID ... | --count N | --all)",
    )
    letters.add_argument("name")
    letters.add_argument("queue")
    letters.add_argument("action", nargs="?", choices=deadletters.ACTIONS, default="list")
    namespaced(letters)
    letters.add_argument("--count", type=int, help="list: at most N (default 20); requeue, purge: the N oldest")
    letters.add_argument("--id", action="append", default=[], dest="ids", metavar="ID", help="repeatable")
    letters.add_argument("--all", action="store_true", help="purge: every dead letter of the queue")
    letters.add_argument("--json", action="store_true", help="list: one JSON dead letter per line")
    letters.add_argument("--broker-url", help="reach the broker here instead (e.g. through kubectl port-forward)")

    completion = commands.add_parser("completion", help="print a shell completion script")
    completion.add_argument("shell", choices=["bash"])
    return parser


def run(args: argparse.Namespace) -> int:
    if args.command == "completion":
        print(COMPLETION, end="")
        return 0
    api = cluster.Cluster.connect(args.kubeconfig, args.context)
    namespace = args.namespace or api.default_namespace
    if args.command == "status":
        body = api.jobqueue(namespace, args.name)
        print(render.status(body, api.events(namespace, args.name, args.events), time.time(), args.stale_after))
        return 0
    if args.command == "send":
        if args.count < 1:
            raise PluginError(f"--count must be at least 1, not {args.count}")
        if args.priority is not None and not 0 <= args.priority <= 9:
            raise PluginError(f"--priority must be between 0 and 9, not {args.priority}")
        body = api.jobqueue(namespace, args.name)
        ids = sending.send(api, body, args.queue, args.task, dict(args.arg), args.count, args.priority, args.broker_url)
        print(f"sent {len(ids)} {args.task} to {namespace}/{args.name} queue {args.queue}: {ids[0]}"
              + (f" ... {ids[-1]}" if len(ids) > 1 else ""))  # fmt: skip
        return 0
    if args.command == "deadletters":
        body = api.jobqueue(namespace, args.name)
        options = deadletters.options(args.action, args.count, args.ids, args.all, args.json)
        return deadletters.run(api, body, args.queue, args.action, options, args.broker_url)
    scope = None if args.all_namespaces else namespace
    terminal = sys.stdout.isatty()
    while True:
        text = render.top(api.jobqueues(scope), time.time(), args.stale_after)
        if args.once or not (terminal or args.watch):
            print(text)
            return 0
        # a terminal is redrawn in place; a pipe (--watch) gets plain blocks, never screen codes
        sys.stdout.write(("\x1b[H\x1b[2J" if terminal else "\n") + text + "\n")
        sys.stdout.flush()
        time.sleep(args.interval)


def _parsed_and_run(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    try:
        return run(args)
    except PluginError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. A reader that went away (`kubectl jobqueue status NAME | head -1`, a `top --watch`
    piped into `head`) is not a failure: the command ends quietly, as `cat | head` does, instead of a
    BrokenPipeError traceback. stdout is flushed here, inside the handler, so a closed pipe is met here and
    not in Python's flush at exit."""
    try:
        try:
            return _parsed_and_run(argv)
        finally:
            sys.stdout.flush()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's own flush goes nowhere
        return 0


if __name__ == "__main__":
    sys.exit(main())
