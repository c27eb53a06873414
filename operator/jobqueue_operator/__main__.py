"""`jobqueue-operator`: run the kopf operator with the flags a Deployment needs.

    jobqueue-operator --all-namespaces              # the default
    jobqueue-operator --namespace apps --namespace media
    jobqueue-operator --liveness http://0.0.0.0:8080/healthz

One replica runs at a time (the chart's Deployment has strategy Recreate), so there is no peering: kopf
runs standalone unless --peering names a KopfPeering object.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Sequence

import kopf

import jobqueue_operator.handlers  # noqa: F401 - registers the handlers


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
    parser.add_argument("--peering", default="", help="a KopfPeering name; without it the operator runs standalone")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    namespaces = args.namespace or [n for n in os.environ.get("JOBQUEUE_NAMESPACES", "").split(",") if n]
    kopf.run(
        clusterwide=args.all_namespaces or not namespaces,
        namespaces=() if args.all_namespaces else namespaces,
        standalone=not args.peering,
        peering_name=args.peering or None,
        liveness_endpoint=args.liveness or None,
    )


if __name__ == "__main__":
    main()
