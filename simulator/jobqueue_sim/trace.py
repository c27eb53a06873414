"""The trace format, kept stable so others can feed their own: CSV, header `arrival_s,service_s`
and optionally `priority` (Celery's 0-9, 0 first), one task per row, any order."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class TaskSpec:
    arrival_s: float
    service_s: float
    priority: int = 0


def load(path: Path) -> list[TaskSpec]:
    """The trace's tasks, sorted by arrival."""
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"arrival_s", "service_s"} - set(reader.fieldnames or ())
        if missing:
            raise ValueError(f"{path}: missing column(s) {sorted(missing)}")
        tasks = [
            TaskSpec(float(row["arrival_s"]), float(row["service_s"]), int(row.get("priority") or 0)) for row in reader
        ]
    if any(t.arrival_s < 0 or t.service_s < 0 or not 0 <= t.priority <= 9 for t in tasks):
        raise ValueError(f"{path}: arrival_s and service_s must be >= 0 and priority within 0..9")
    return sorted(tasks, key=lambda t: t.arrival_s)


def save(path: Path, tasks: list[TaskSpec]) -> None:
    with_priority = any(t.priority for t in tasks)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["arrival_s", "service_s", *(["priority"] if with_priority else [])])
        for t in tasks:
            writer.writerow([f"{t.arrival_s:.3f}", f"{t.service_s:.3f}", *([t.priority] if with_priority else [])])
