"""python -m bench.autoscale.traces: write every trace shape (jobqueue_sim.shapes) to bench/traces/, seeded,
so the shipped CSVs are regenerated exactly."""

from __future__ import annotations

from pathlib import Path

from jobqueue_sim import shapes, trace

TRACES_DIR = Path(__file__).resolve().parent.parent / "traces"


def main() -> None:
    TRACES_DIR.mkdir(exist_ok=True)
    for name in shapes.GENERATORS:
        tasks = shapes.generate(name)
        trace.save(TRACES_DIR / f"{name}.csv", tasks)
        print(f"{name}.csv: {len(tasks)} tasks over {tasks[-1].arrival_s / 60:.0f} min")


if __name__ == "__main__":
    main()
