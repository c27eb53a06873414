"""When to restart a container that ended (pure functions)."""

from __future__ import annotations

from dataclasses import dataclass


def should_restart(restart_policy: str, exit_code: int) -> bool:
    """Restart policy of the Pod applied to one container's exit."""
    if restart_policy == "Always":
        return True
    if restart_policy == "OnFailure":
        return exit_code != 0
    return False


@dataclass(frozen=True)
class BackOff:
    """Crash-loop back-off: the delay doubles from `base` up to `cap`, and starts over after a long run.

    The kubelet uses 10 s doubling to 300 s, reset after 10 minutes of running; the local agent
    defaults to shorter delays so tests of crash loops take seconds.
    """

    base: float = 1.0
    cap: float = 30.0
    reset_after: float = 60.0

    def next_delay(self, previous: float | None, ran_for: float) -> float:
        if previous is None or ran_for >= self.reset_after:
            return self.base
        return min(previous * 2, self.cap)
