"""`kubectl jobqueue` whose reader went away (`| head`, `| true`) ends quietly, for every command, without a
cluster: the commands that need one are run against it in tests/integration/operator/test_day_two_status.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PLUGIN = Path(sys.executable).parent / "kubectl-jobqueue"


@pytest.mark.parametrize("args", [["completion", "bash"], ["--help"], ["top", "--help"]])
def test_a_reader_that_left_before_anything_was_written_is_not_a_traceback(args: list[str]) -> None:
    started = subprocess.Popen([str(PLUGIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert started.stdout is not None
    assert started.stderr is not None
    started.stdout.close()  # before the interpreter has even started: the first write meets a closed pipe
    assert started.wait(timeout=60) == 0
    assert started.stderr.read() == ""
    started.stderr.close()
