"""Where a benchmark's numbers go: one JSON file in bench/results/, with the machine it ran on.

In devenv, not in bench/, because the benchmarks run as scripts (`python bench/pod_startup.py`) with only
devenv on PYTHONPATH."""

from __future__ import annotations

import json
import os
import platform
from collections.abc import Mapping
from pathlib import Path
from typing import Any


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def write(path: Path, record: Mapping[str, Any]) -> None:
    """Write `record` with this machine merged into its `machine` field, and say where."""
    path.parent.mkdir(parents=True, exist_ok=True)
    full = {**record, "machine": {**machine(), **record.get("machine", {})}}
    path.write_text(json.dumps(full, indent=2) + "\n")
    print(f"wrote {path}")
