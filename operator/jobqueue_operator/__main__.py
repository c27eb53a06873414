"""`jobqueue-operator`: run the kopf operator with the flags a Deployment needs.

    jobqueue-operator --all-namespaces              # the default
    jobqueue-operator --namespace apps --namespace media
    jobqueue-operator --liveness http://0.0.0.0:8080/healthz --metrics-port 8081 --autoscale-seconds 5

Several replicas may run (the chart's default is two): they elect a leader on a Lease (election.py,
leader.py) and only the leader writes; the others watch, serve /healthz and /metrics, and stand by.
kopf itself runs standalone (its own peering, --peering, is not needed for this).
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Final

import kopf
from pydantic import ValidationError

from jobqueue_operator import election
from jobqueue_operator.settings import OperatorSettings

BATCH_WINDOW_SECONDS: Final = 0.02
"""How long kopf gathers a JobQueue's watch events before it acts (kopf's default is 0.1 s). A new
JobQueue passes this window twice (its creation, then kopf's finalizer), and the handlers are idempotent,
so a short window costs nothing and takes most of 0.2 s off the time to the first status."""


def settings() -> kopf.OperatorSettings:
    """kopf's settings that must hold from the start; the startup handler (handlers.py) sets the rest."""
    chosen = kopf.OperatorSettings()
    chosen.batching.batch_window = BATCH_WINDOW_SECONDS
    return chosen


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="jobqueue-operator", description=__doc__.splitlines()[0])
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; globs such as 'team-*' allowed); env JOBQUEUE_NAMESPACES",
    )
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (the default)")
    parser.add_argument(
        "--liveness",
        default=os.environ.get("JOBQUEUE_LIVENESS", "http://0.0.0.0:8080/healthz"),
        help="the liveness endpoint kopf serves; empty to serve none",
    )
    parser.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="port of the operator's Prometheus /metrics, on all interfaces; 0 serves none (default 8081)",
    )
    parser.add_argument(
        "--autoscale-seconds",
        type=float,
        default=None,
        help="how often each JobQueue's queues are measured and scaled (default 5)",
    )
    parser.add_argument("--peering", default="", help="a KopfPeering name; without it the operator runs standalone")
    group = parser.add_argument_group("leader election (env JOBQUEUE_LEADER_ELECTION, JOBQUEUE_LEASE_*)")
    group.add_argument(
        "--leader-election",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="act only while holding the Lease (the default); --no-leader-election: act at once, alone",
    )
    group.add_argument("--lease-name", default=None, help=f"the Lease they compete for ({election.DEFAULT_LEASE_NAME})")
    group.add_argument(
        "--lease-namespace",
        default=None,
        help="its namespace (default: POD_NAMESPACE, else the first --namespace, else default)",
    )
    group.add_argument(
        "--lease-duration-seconds",
        type=int,
        default=None,
        help=f"a standby takes over this long after the last renewal ({election.LEASE_DURATION_SECONDS})",
    )
    group.add_argument(
        "--renew-deadline-seconds",
        type=float,
        default=None,
        help=f"a leader that could not renew for this long exits ({election.RENEW_DEADLINE_SECONDS:g})",
    )
    group.add_argument(
        "--retry-period-seconds",
        type=float,
        default=None,
        help=f"the leader renews, a standby looks, this often ({election.RETRY_PERIOD_SECONDS:g})",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def operator_settings(args: argparse.Namespace) -> OperatorSettings:
    """The environment's settings with the flags given on the command line on top."""
    flags = {
        "metrics_port": args.metrics_port,
        "autoscale_seconds": args.autoscale_seconds,
        "leader_election": args.leader_election,
        "lease_name": args.lease_name,
        "lease_namespace": args.lease_namespace,
        "lease_duration_seconds": args.lease_duration_seconds,
        "renew_deadline_seconds": args.renew_deadline_seconds,
        "retry_period_seconds": args.retry_period_seconds,
    }
    given = {name: value for name, value in flags.items() if value is not None}
    return OperatorSettings.model_validate({**OperatorSettings.from_environment().model_dump(), **given})


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    if not args.verbose:  # kopf logs every watch handler's success: one line per child event
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
        # the kubernetes client's election logs every look at the Lease; leader.py logs what changes
        logging.getLogger("leaderelection").setLevel(logging.WARNING)
    namespaces = args.namespace or [n for n in os.environ.get("JOBQUEUE_NAMESPACES", "").split(",") if n]
    try:
        chosen = operator_settings(args)
    except ValidationError as exc:  # a bad flag or JOBQUEUE_* variable: one line, no traceback
        error = exc.errors()[0]
        where = f" {error['loc'][0]}" if error["loc"] else ""
        raise SystemExit(f"jobqueue-operator: invalid setting{where}: {error['msg']}") from None
    lease_namespace = election.lease_namespace(chosen.lease_namespace, os.environ, namespaces)
    chosen = chosen.model_copy(update={"lease_namespace": lease_namespace})
    import jobqueue_operator.handlers  # noqa: F401 - registers the handlers

    kopf.run(
        settings=settings(),
        memo=kopf.Memo(settings=chosen),
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=() if args.all_namespaces else namespaces,
        standalone=not args.peering,
        peering_name=args.peering or None,
        liveness_endpoint=args.liveness or None,
    )


if __name__ == "__main__":
    main()
