"""Where a container's output goes: one file per run, as the kubelet keeps them.

`<pod folder>/<container>/<run>.log`, run 0 first; a restart starts the next file, so `kubectl logs`
shows the current run and `--previous` the one before. The files stay after the Pod is deleted, until
the cluster is stopped (`make logs` reads them then).
"""

from __future__ import annotations

from pathlib import Path


def run_log(pod_folder: Path, container: str, run: int) -> Path:
    return pod_folder / container / f"{run}.log"


def runs(pod_folder: Path, container: str) -> list[Path]:
    """The container's log files, oldest run first."""
    found = [p for p in (pod_folder / container).glob("*.log") if p.stem.isdigit()]
    return sorted(found, key=lambda p: int(p.stem))


def containers(pod_folder: Path) -> list[str]:
    """Names of the containers that have written logs in this Pod folder."""
    return (
        sorted(p.name for p in pod_folder.iterdir() if p.is_dir() and runs(pod_folder, p.name))
        if pod_folder.is_dir()
        else []
    )


def read_all(pod_folder: Path, container: str) -> str:
    """Every run's output, in order (what a single appended log file would hold)."""
    return "".join(p.read_text(errors="replace") for p in runs(pod_folder, container))
