"""Command line of the local environment: `python -m jobqueue_devenv COMMAND` (binaries, images, build, up,
down, status, node, demo, prometheus, exec, logs).

Progress goes to stderr; `up` prints shell `export` lines on stdout, KUBECONFIG last, so
`eval "$(python -m jobqueue_devenv up)"` works.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from jobqueue_devenv import binaries, cluster, nodes
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.nodeagent import cleanup as nodeagent_cleanup
from jobqueue_devenv.nodeagent import cloud as nodeagent_cloud
from jobqueue_devenv.nodeagent import layout as nodeagent_layout
from jobqueue_devenv.nodeagent import logs as nodeagent_logs
from jobqueue_devenv.paths import default_cluster_dir


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def _timeout() -> float:
    value = os.environ.get("JQ_CLUSTER_TIMEOUT", "90")
    try:
        return float(value)
    except ValueError:
        raise DevenvError(f"JQ_CLUSTER_TIMEOUT={value!r} is not a number of seconds", "set it to e.g. 120") from None


def exports(state: cluster.ClusterState) -> str:
    path = os.pathsep.join([*state.bin_dirs, "$PATH"])
    return f'export PATH="{path}"\nexport KUBECONFIG={state.kubeconfig}'


def cmd_binaries(args: argparse.Namespace) -> None:
    found = binaries.ensure(tools=args.tools)
    _say(f"binaries ready: {', '.join(str(d) for d in found.bin_dirs)}")


def cmd_images(args: argparse.Namespace) -> None:
    from jobqueue_devenv import images

    built = images.ensure(args.names)
    _say(f"images ready: {', '.join(built.values())}")


def cmd_build(args: argparse.Namespace) -> None:
    from jobqueue_devenv import images

    images.build_user(args.tag, args.context, args.file)


def cmd_prometheus(args: argparse.Namespace) -> None:
    from jobqueue_devenv import local_prometheus

    local_prometheus.run(args.dir, args.release, args.namespace, args.port)


def cmd_up(args: argparse.Namespace) -> None:
    found = binaries.ensure()
    state, reused = cluster.up(args.dir, found, timeout=_timeout(), nodes=args.nodes)
    names = ", ".join(state.node_names)
    if reused:
        _say(
            f"cluster already running in {args.dir} (apiserver {state.apiserver_url}, nodes {names}); "
            "not starting another"
        )
    else:
        _say(f"cluster ready in {state.ready_seconds:.1f}s: apiserver {state.apiserver_url}, nodes {names}")
        _say(f"logs in {args.dir}/logs; stop it with `make cluster-down`")
    print(exports(state), flush=True)


def cmd_down(args: argparse.Namespace) -> None:
    stopped = cluster.down(args.dir)
    _say(f"stopped {', '.join(stopped)}" if stopped else f"no cluster was running in {args.dir}")


def cmd_status(args: argparse.Namespace) -> None:
    state = cluster.ClusterState.load(args.dir)
    if state is None:
        _say(f"no cluster in {args.dir}")
        sys.exit(1)
    healthy = cluster.is_healthy(state)
    _say(f"{'running' if healthy else 'NOT healthy'}: apiserver {state.apiserver_url}, logs in {args.dir}/logs")
    print(exports(state))
    sys.exit(0 if healthy else 1)


def cmd_node(args: argparse.Namespace) -> None:
    """Power a node off (`kill`: a power cut) or on (`start`: an empty, rebooted machine), or list the nodes."""
    if args.action == "list":
        for name, agent in nodes.listing(args.dir):
            print(f"{name}\t{agent}", flush=True)
        return
    if not args.node:
        raise DevenvError(
            f"node {args.action} needs a node name", f"see `python -m jobqueue_devenv --dir {args.dir} node list`"
        )
    if args.action == "kill":
        nodes.kill(args.dir, args.node)
        _say(f"node {args.node} is off: its agent and every process of its Pods were SIGKILLed")
    else:
        nodes.start(args.dir, args.node)
        _say(f"node {args.node} is Ready again, with no Pod of before running")


def cmd_demo(_: argparse.Namespace) -> None:
    """A throw-away cluster, the operator, examples/demo.yaml and a burst of tasks shown live (see demo.py)."""
    from jobqueue_devenv import demo

    demo.run(timeout=_timeout())


def cmd_exec(args: argparse.Namespace) -> None:
    """Run a host command that resolves Service names (`<svc>.<ns>.svc`) like a Pod of the local cluster.

    The command gets a private mount namespace in which the cloud process's hosts file (the real
    /etc/hosts plus every Service) is bind-mounted over /etc/hosts, and KUBECONFIG of the cluster.
    """
    hosts = nodeagent_cloud.hosts_file(args.dir)
    state = cluster.ClusterState.load(args.dir)
    if state is None or not hosts.exists():
        raise DevenvError(f"no running local cluster in {args.dir}", "start one with `make cluster-up`")
    command = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not command:
        raise DevenvError("no command given", "usage: python -m jobqueue_devenv exec -- COMMAND [ARGS...]")
    env = dict(os.environ, KUBECONFIG=state.kubeconfig)
    script = 'mount --bind "$0" /etc/hosts && exec "$@"'
    os.execvpe(
        "unshare", ["unshare", "--mount", "--propagation", "slave", "sh", "-c", script, str(hosts), *command], env
    )


def cmd_logs(args: argparse.Namespace) -> None:
    """Print every run's output of a Pod's containers (kept after the Pod is deleted, until `down`).

    `kubectl logs` (with -f, --previous, -c) works too while the cluster runs; this also reads Pods
    that are gone.
    """
    namespace, _, name = args.pod.rpartition("/")
    folders = sorted(
        (
            found
            for node in nodeagent_layout.node_folders(args.dir)
            for found in (node / nodeagent_cleanup.PODS_FOLDER).glob(f"{namespace or 'default'}_{name}_*")
        ),
        key=lambda p: p.stat().st_mtime,
    )
    if not folders:
        raise DevenvError(
            f"no logs of pod {args.pod} in {args.dir}", "name it as NAMESPACE/NAME (see kubectl get pods -A)"
        )
    names = [args.container] if args.container else nodeagent_logs.containers(folders[-1])
    for name in names:
        if len(names) > 1:
            print(f"==> {name} <==", flush=True)
        sys.stdout.write(nodeagent_logs.read_all(folders[-1], name))
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m jobqueue_devenv", description=__doc__)
    parser.add_argument(
        "--dir",
        type=Path,
        default=default_cluster_dir(),
        help="cluster folder (default: $JQ_CLUSTER_DIR or $TMPDIR/jobqueue-cluster-$UID)",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the local cluster, or reuse the running one")
    start.add_argument(
        "--nodes",
        type=int,
        help=f"how many nodes (1 to {nodeagent_layout.MAX_NODES}; default: ${cluster.NODES_VARIABLE}, else 1)",
    )
    start.set_defaults(func=cmd_up)
    node = commands.add_parser("node", help="power a node off (kill) or on (start), or list the nodes")
    node.add_argument("action", choices=("kill", "start", "list"))
    node.add_argument("node", nargs="?", help="e.g. jobqueue-local-2 (see `node list`)")
    node.set_defaults(func=cmd_node)
    for name, handler, text in (
        ("down", cmd_down, "stop the local cluster and delete its folder"),
        ("status", cmd_status, "say whether the local cluster is running"),
        ("demo", cmd_demo, "a throw-away cluster running the operator and a burst of tasks, shown live"),
    ):
        commands.add_parser(name, help=text).set_defaults(func=handler)
    build = commands.add_parser("binaries", help="build (or find) etcd, the control plane, kubectl and helm")
    build.add_argument("--tools", action="store_true", help="also the tests' tools: prometheus and promtool")
    build.set_defaults(func=cmd_binaries)
    image = commands.add_parser(
        "images", help="build the operator, worker and examples images, and the Redis and Flower stand-ins"
    )
    image.add_argument(
        "names",
        nargs="*",
        help="only these (jobqueue-operator, jobqueue-worker, jobqueue-examples, jobqueue-flower, jobqueue-redis)",
    )
    image.set_defaults(func=cmd_images)
    user = commands.add_parser(
        "build", help="build your own image (e.g. FROM jobqueue-worker:dev) for the local cluster, as `images` does"
    )
    user.add_argument("-t", "--tag", required=True, help="its name, e.g. myapp:dev (the JobQueue's spec.image)")
    user.add_argument("-f", "--file", type=Path, help="the Dockerfile (default: CONTEXT/Dockerfile)")
    user.add_argument("context", type=Path, help="the folder the Dockerfile COPYs from")
    user.set_defaults(func=cmd_build)
    prometheus = commands.add_parser(
        "prometheus", help="a Prometheus on the host scraping the local cluster as the chart's monitors say"
    )
    prometheus.add_argument("--port", type=int, default=9090, help="its port on 127.0.0.1 (default 9090)")
    prometheus.add_argument("--release", default="jobqueue-operator", help="the chart's Helm release")
    prometheus.add_argument("--namespace", default="jobqueue-system", help="the release's namespace")
    prometheus.set_defaults(func=cmd_prometheus)
    run = commands.add_parser("exec", help="run a host command that resolves Service names like a Pod")
    run.add_argument("argv", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")
    run.set_defaults(func=cmd_exec)
    logs = commands.add_parser("logs", help="print a Pod's container logs")
    logs.add_argument("pod", help="NAMESPACE/NAME")
    logs.add_argument("-c", "--container", help="only this container")
    logs.set_defaults(func=cmd_logs)
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except DevenvError as exc:
        print(f"error: {exc.cause}", file=sys.stderr)
        print(f"  fix: {exc.remedy}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
