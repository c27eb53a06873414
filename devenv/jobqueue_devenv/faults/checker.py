"""Judge a scenario from what was sent and what the ledger recorded: pure, so it is unit tested.

A task is *lost* when it was sent and never finished (and was not meant to be dead-lettered), *duplicated*
when it finished more than once or started more than once where no restart was allowed, *interrupted* when
it started more than once (a worker stopped it and it ran again), *stuck* when it started and never finished.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from statistics import median


@dataclass(frozen=True)
class Verdict:
    tasks: int
    lost: frozenset[str] = field(default_factory=frozenset)
    duplicated: frozenset[str] = field(default_factory=frozenset)
    interrupted: frozenset[str] = field(default_factory=frozenset)
    stuck: frozenset[str] = field(default_factory=frozenset)
    unknown: frozenset[str] = field(default_factory=frozenset)
    """Ids in the ledger that were never sent: another run's tasks, or a ledger that lies."""

    def counts(self) -> dict[str, int]:
        return {
            "tasks": self.tasks,
            "lost": len(self.lost),
            "duplicated": len(self.duplicated),
            "interrupted": len(self.interrupted),
            "stuck": len(self.stuck),
            "unknown": len(self.unknown),
        }


def check(
    sent: Iterable[str],
    started: Mapping[str, int],
    done: Mapping[str, int],
    *,
    may_restart: Collection[str] = (),
    dead_lettered: Collection[str] = (),
) -> Verdict:
    """Count what went wrong. `may_restart`: ids a fault was allowed to interrupt (the killed worker's);
    `dead_lettered`: ids meant to end in the dead-letter queue, never done."""
    ids = frozenset(sent)
    finished = {task for task, count in done.items() if count > 0}
    ran = {task for task, count in started.items() if count > 0}
    restarted = frozenset(task for task, count in started.items() if count > 1 and task in ids)
    twice_done = {task for task, count in done.items() if count > 1 and task in ids}
    return Verdict(
        tasks=len(ids),
        lost=frozenset(ids - finished - frozenset(dead_lettered)),
        duplicated=frozenset(twice_done | (restarted - frozenset(may_restart))),
        interrupted=restarted,
        stuck=frozenset((ran & ids) - finished - frozenset(dead_lettered)),
        unknown=frozenset((ran | finished) - ids),
    )


def spread(seconds: Sequence[float]) -> dict[str, float | None]:
    """Median and worst of measured times (redelivery after each kill)."""
    return {"median": median(seconds) if seconds else None, "worst": max(seconds) if seconds else None}
