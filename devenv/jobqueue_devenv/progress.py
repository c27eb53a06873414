"""Progress of long builds (Go binaries, images): one line redrawn in place on a terminal, one every 30 s in a log."""

from __future__ import annotations

import sys
import time


def minutes(seconds: float) -> str:
    return f"{int(seconds // 60)}m{int(seconds % 60):02d}s"


def say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class Progress:
    """`update(text)` as often as there is news; the line shows the latest text and the time elapsed."""

    def __init__(self, name: str, started: float | None = None) -> None:
        self.name = name
        self.started = time.monotonic() if started is None else started
        self.text = "starting"
        self.last_print = 0.0
        self.tty = sys.stderr.isatty()

    def update(self, text: str) -> None:
        self.text = text
        now = time.monotonic()
        if now - self.last_print >= (0.5 if self.tty else 30):
            self.last_print = now
            self._print()

    def done(self) -> None:
        self._print()
        if self.tty:
            sys.stderr.write("\n")

    def _print(self) -> None:
        line = f"  {self.name}: {self.text}, {minutes(time.monotonic() - self.started)} elapsed"
        sys.stderr.write(f"\r{line}\033[K" if self.tty else f"{line}\n")
        sys.stderr.flush()
