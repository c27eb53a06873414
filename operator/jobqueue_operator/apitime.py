"""PURE: the API server's timestamps (RFC 3339, `2026-01-02T03:04:05Z`, with or without fractions) as
seconds since the epoch."""

from __future__ import annotations

import datetime


def epoch_of(stamp: object) -> float | None:
    """Seconds since the epoch of an API server timestamp; None for anything else (absent, empty, bad)."""
    if not isinstance(stamp, str) or not stamp:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()
