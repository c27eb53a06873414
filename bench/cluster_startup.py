"""How long the local cluster takes to become usable, with the binaries already cached.

Starts and stops a fresh cluster RUNS times (default 5) and prints, per run, the seconds from the
start until etcd was healthy, kube-apiserver answered /readyz, the controller-manager and the scheduler
were healthy, and every node was Ready; then the median and the worst. Writes the same to
bench/results/cluster_startup.json (cluster_startup_3_nodes.json with --nodes 3). Target: ready (readyz ok
and every node Ready) in 20 s or less. With several nodes each run also powers the second node off and on
(`nodes.kill`, `nodes.start`: until no process of it is left, and until it is Ready again).

Usage: python bench/cluster_startup.py [RUNS] [--nodes N]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from jobqueue_devenv import bench_results, binaries, cluster, nodes, versions

RESULTS = Path(__file__).parent / "results"
TARGET_SECONDS = 20.0


def one_run(found: binaries.Binaries, count: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="jq-bench-") as tmp:
        directory = Path(tmp) / "cluster"
        started = time.monotonic()
        state, _ = cluster.up(directory, found, nodes=count)
        total = time.monotonic() - started
        sample = {**state.timings, "ready (total)": round(total, 2)}
        try:
            if count > 1:
                second = state.node_names[1]
                kill_started = time.monotonic()
                nodes.kill(directory, second)
                sample["node kill"] = round(time.monotonic() - kill_started, 2)
                start_started = time.monotonic()
                nodes.start(directory, second)
                sample["node start"] = round(time.monotonic() - start_started, 2)
        finally:
            stop_started = time.monotonic()
            cluster.down(directory)
        return {**sample, "stop": round(time.monotonic() - stop_started, 2)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("runs", type=int, nargs="?", default=5)
    parser.add_argument("--nodes", type=int, default=1)
    args = parser.parse_args()
    runs = args.runs
    found = binaries.find()
    samples = [one_run(found, args.nodes) for _ in range(runs)]
    columns = list(samples[0])
    width = max(len(c) for c in columns)
    print(f"local cluster start-up, {args.nodes} node(s), {runs} runs, Kubernetes {versions.K8S_VERSION}, seconds")
    print(f"{'milestone':<{width}}  " + "  ".join(f"run{i + 1:>2}" for i in range(runs)) + "  median   max")
    summary: dict[str, dict[str, float]] = {}
    for column in columns:
        values = [s[column] for s in samples]
        summary[column] = {"median": round(statistics.median(values), 2), "max": max(values)}
        cells = "  ".join(f"{v:5.2f}" for v in values)
        print(f"{column:<{width}}  {cells}  {summary[column]['median']:6.2f} {summary[column]['max']:5.2f}")
    worst = summary["ready (total)"]["max"]
    verdict = "within" if worst <= TARGET_SECONDS else "OVER"
    print(f"\nworst time to ready: {worst:.2f}s ({verdict} the {TARGET_SECONDS:g}s target)")
    bench_results.write(
        RESULTS / ("cluster_startup.json" if args.nodes == 1 else f"cluster_startup_{args.nodes}_nodes.json"),
        {
            "benchmark": "cluster_startup",
            "nodes": args.nodes,
            "kubernetes": versions.K8S_VERSION,
            "etcd": versions.ETCD_VERSION,
            "target_seconds": TARGET_SECONDS,
            "runs": samples,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
