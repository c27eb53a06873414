"""The ledger: each task's starts and finishes, read from the built-in tasks' records.

The records live in the result backend's Redis; a scenario that restarts the broker points the result
backend at a Redis of its own, so the ledger survives the fault it measures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobqueue_devenv.faults.checker import Verdict, check
from jobqueue_worker import records


@dataclass(frozen=True)
class Ledger:
    client: Any
    """A Redis client on the result backend."""
    run_id: str
    prefix: str = ""

    def started(self) -> dict[str, int]:
        return records.read(self.client, self.run_id, records.STARTED, self.prefix)

    def done(self) -> dict[str, int]:
        return records.read(self.client, self.run_id, records.DONE, self.prefix)

    def verdict(self, sent: list[str], **allowances: Any) -> Verdict:
        return check(sent, self.started(), self.done(), **allowances)
