"""How long the local cluster takes to become usable, with the binaries already cached.

Starts and stops a fresh cluster RUNS times (default 5) and prints, per run, the seconds from the
start until etcd was healthy, kube-apiserver answered /readyz, the controller-manager and the scheduler
were healthy, and the node was Ready; then the median and the worst. Writes the same to
bench/results/cluster_startup.json. Target: ready (readyz ok and node Ready) in 20 s or less.

Usage: python bench/cluster_startup.py [RUNS]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

from jobqueue_devenv import bench_results, binaries, cluster, versions

RESULTS = Path(__file__).parent / "results" / "cluster_startup.json"
TARGET_SECONDS = 20.0


def one_run(found: binaries.Binaries) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="jq-bench-") as tmp:
        directory = Path(tmp) / "cluster"
        started = time.monotonic()
        state, _ = cluster.up(directory, found)
        total = time.monotonic() - started
        stop_started = time.monotonic()
        cluster.down(directory)
        return {**state.timings, "ready (total)": round(total, 2), "stop": round(time.monotonic() - stop_started, 2)}


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 5
    found = binaries.find()
    samples = [one_run(found) for _ in range(runs)]
    columns = list(samples[0])
    width = max(len(c) for c in columns)
    print(f"local cluster start-up, {runs} runs, Kubernetes {versions.K8S_VERSION}, seconds since start")
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
        RESULTS,
        {
            "benchmark": "cluster_startup",
            "kubernetes": versions.K8S_VERSION,
            "etcd": versions.ETCD_VERSION,
            "target_seconds": TARGET_SECONDS,
            "runs": samples,
            "summary": summary,
        },
    )


if __name__ == "__main__":
    main()
