"""The optional metric source of a queue: one PromQL query answered by a Prometheus server.

A queue with `autoscaling.prometheus` is scaled on the query's value as its count of waiting tasks
instead of the broker's lists (its running tasks still come from the broker; see docs/autoscaling.md).
This is the only module that talks to Prometheus: `instant_query` does the HTTP request, `value_of`
(pure) turns the reply into one number or a clear reason why it is none.
"""

from __future__ import annotations

import json
import math
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from typing import Any, Final

API_PATH: Final = "/api/v1/query"
MAX_ERROR_CHARS: Final = 300


class QueryError(Exception):
    """The query gave no usable number; the message says why, for an Event and the log."""


def query_url(server_address: str, query: str) -> str:
    """The instant-query URL: the API path after whatever path the server address already has."""
    base = server_address.rstrip("/")
    return f"{base}{API_PATH}?{urllib.parse.urlencode({'query': query})}"


def value_of(payload: Mapping[str, Any]) -> float:
    """The one number an instant query answered (pure). Exactly one series or a scalar, finite, not negative;
    anything else raises QueryError. No series is an error, not zero: a misspelt metric must not scale a
    queue to zero (write `sum(...) or vector(0)` when no series does mean zero)."""
    if payload.get("status") != "success":
        kind, detail = payload.get("errorType", "error"), payload.get("error", "no detail")
        raise QueryError(f"Prometheus refused the query: {kind}: {detail}"[:MAX_ERROR_CHARS])
    data = payload.get("data") or {}
    kind, result = data.get("resultType"), data.get("result")
    if kind == "scalar":
        sample = result
    elif kind == "vector" and isinstance(result, list):
        if not result:
            raise QueryError("the query returned no series (append `or vector(0)` if that means zero tasks)")
        if len(result) > 1:
            raise QueryError(f"the query returned {len(result)} series; aggregate them to one, e.g. with sum()")
        sample = result[0].get("value")
    else:
        raise QueryError(f"the query must return an instant vector or a scalar, not {kind}")
    try:
        number = float(sample[1])  # type: ignore[index]
    except (TypeError, ValueError, IndexError, KeyError):
        raise QueryError(f"the query's sample {sample!r} is not a number") from None
    if not math.isfinite(number) or number < 0:
        raise QueryError(f"the query returned {number}; a count of tasks must be a finite number >= 0")
    return number


def instant_query(server_address: str, query: str, timeout: float) -> float:
    """Ask the server; raises QueryError for an unreachable server, an HTTP error or an unusable answer."""
    request = urllib.request.Request(query_url(server_address, query), headers={"Accept": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as reply:
            body = reply.read()
    except urllib.error.HTTPError as exc:  # Prometheus answers 400/422 with a JSON error body
        body = exc.read()
        if not body:
            raise QueryError(f"{server_address} answered HTTP {exc.code}") from None
    except (OSError, ValueError) as exc:
        raise QueryError(f"{server_address} cannot be queried: {exc}") from None
    try:
        payload = json.loads(body)
    except ValueError:
        raise QueryError(f"{server_address} did not answer with JSON; is it a Prometheus server?") from None
    if not isinstance(payload, dict):
        raise QueryError(f"{server_address} answered with JSON that is not a Prometheus reply")
    return value_of(payload)
