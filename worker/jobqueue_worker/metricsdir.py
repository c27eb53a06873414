"""The private directory of prometheus-client's multiprocess files, and no leftovers of earlier runs.

Each worker process start makes `<tmp>/jobqueue-worker-metrics-<random>` and holds an flock on the
`.lock` file inside it for as long as it (or one of its pool children, which inherit the descriptor)
runs. A clean exit removes the directory; a SIGKILL cannot, but the kernel drops the lock with the last
process, so the next start (on the same /tmp: an emptyDir survives container restarts) removes every
such directory nobody holds. The directory is created under a hidden name and renamed once locked, so
a cleaning neighbour never mistakes a new one for an abandoned one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from jobqueue_worker.settings import SettingsError

PREFIX = "jobqueue-worker-metrics-"
LOCK = ".lock"


class NoTemporaryDirectory(SettingsError):
    """No writable temporary directory; the message is one line naming the fix (exit code 2)."""


def _held(lock_file: Path) -> bool:
    try:
        with lock_file.open("r") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False
    except FileNotFoundError:
        return False  # no lock at all: abandoned before it was locked, or made by an older version


def remove_stale(base: Path) -> list[Path]:
    """Remove the metrics directories in `base` that no running process holds; returns them."""
    removed = []
    for path in base.glob(f"{PREFIX}*"):
        if path.is_dir() and not path.is_symlink() and not _held(path / LOCK):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _base() -> Path:
    try:
        return Path(tempfile.gettempdir())
    except FileNotFoundError:
        raise NoTemporaryDirectory(_fix("none of TMPDIR, /tmp, /var/tmp, /usr/tmp or the working directory")) from None


def _fix(where: str) -> str:
    return (
        f"no writable temporary directory for the metrics files ({where}): give the container a writable "
        f"/tmp (mount an emptyDir there when the root filesystem is read-only) or set TMPDIR to a writable directory"
    )


@contextlib.contextmanager
def private_directory() -> Iterator[Path]:
    """A fresh, locked metrics directory for this process and its children, removed when the block ends."""
    base = _base()
    remove_stale(base)
    try:
        hidden = Path(tempfile.mkdtemp(prefix=f".{PREFIX}", dir=base))
    except OSError as exc:
        raise NoTemporaryDirectory(_fix(f"{base}: {exc.strerror or exc}")) from None
    lock: IO[str] = (hidden / LOCK).open("w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        path = hidden.with_name(hidden.name[1:])
        os.rename(hidden, path)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)
    finally:
        lock.close()
        shutil.rmtree(hidden, ignore_errors=True)
