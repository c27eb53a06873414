"""The only module that talks to Redis: is a broker URL well formed, and does the broker answer?"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlsplit

import redis

SCHEMES: Final = ("redis", "rediss", "sentinel")
TIMEOUT_SECONDS: Final = 2.0


class BrokerError(Exception):
    """The broker URL is malformed or the broker does not answer; the message never holds a password."""


def _where(url: str) -> str:
    """The URL without credentials, for messages."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname or '?'}:{parts.port or '?'}"


def first_address(url: str) -> str:
    """A redis:// or rediss:// URL to PING: the URL itself, or the first sentinel of a sentinel:// list."""
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise BrokerError(f"the broker URL must start with redis://, rediss:// or sentinel://, not {scheme or '?'}://")
    first = url.split(";")[0]
    if scheme == "sentinel":
        first = "redis" + first[len("sentinel") :]
    try:
        if urlsplit(first).hostname is None:
            raise BrokerError(f"the broker URL {_where(first)} names no host")
        urlsplit(first).port  # noqa: B018 - raises on a port that is not a number
    except ValueError:
        raise BrokerError("the broker URL has an invalid port") from None
    return first


def ping(url: str, timeout: float = TIMEOUT_SECONDS) -> None:
    """PING the broker (for sentinel://, the first sentinel); raises BrokerError when it does not answer."""
    address = first_address(url)
    connection = redis.Redis.from_url(address, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        connection.ping()
    except redis.RedisError as exc:
        raise BrokerError(f"{_where(address)} does not answer PING: {exc}") from None
    finally:
        connection.close()
