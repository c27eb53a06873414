"""Wait until a condition holds, with a deadline: the one polling loop of the local environment."""

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class TimedOut(Exception):
    """The condition did not hold before the deadline."""


def wait_until(
    probe: Callable[[], T | None],
    *,
    timeout: float,
    what: str,
    interval: float = 0.1,
) -> T:
    """Call `probe` until it returns something truthy and return that.

    Exceptions from `probe` count as "not yet"; the last one is named in the TimedOut message, so
    a failed wait says why.
    """
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while True:
        try:
            result = probe()
            if result:
                return result
        except Exception as exc:
            last_error = exc
        if time.monotonic() >= deadline:
            detail = f" (last error: {last_error})" if last_error else ""
            raise TimedOut(f"timed out after {timeout:g}s waiting for {what}{detail}")
        time.sleep(interval)
