"""`jobqueue-operator`: run the kopf operator with the flags a Deployment needs.

    jobqueue-operator --all-namespaces              # the default
    jobqueue-operator --namespace apps --namespace media
    jobqueue-operator --liveness http://0.0.0.0:8080/healthz --metrics-port 8081 --autoscale-seconds 5

One replica runs at a time (the chart's Deployment has strategy Recreate), so there is no peering: kopf
runs standalone unless --peering names a KopfPeering object.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence
from typing import Final

import kopf

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
        default=int(os.environ.get("JOBQUEUE_METRICS_PORT", "8081")),
        help="port of the operator's Prometheus /metrics, on all interfaces; 0 serves none",
    )
    parser.add_argument(
        "--autoscale-seconds",
        type=float,
        default=float(os.environ.get("JOBQUEUE_AUTOSCALE_SECONDS", "5")),
        help="how often each JobQueue's queues are measured and scaled",
    )
    parser.add_argument("--peering", default="", help="a KopfPeering name; without it the operator runs standalone")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # The handlers read these when they are registered, i.e. imported: set them first.
    os.environ["JOBQUEUE_METRICS_PORT"] = str(args.metrics_port)
    os.environ["JOBQUEUE_AUTOSCALE_SECONDS"] = str(args.autoscale_seconds)
    import jobqueue_operator.handlers  # noqa: F401 - registers the handlers

    namespaces = args.namespace or [n for n in os.environ.get("JOBQUEUE_NAMESPACES", "").split(",") if n]
    kopf.run(
        settings=settings(),
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=() if args.all_namespaces else namespaces,
        standalone=not args.peering,
        peering_name=args.peering or None,
        liveness_endpoint=args.liveness or None,
    )


if __name__ == "__main__":
    main()
