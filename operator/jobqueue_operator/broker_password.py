"""PURE: rotating the managed broker's password without dropping a task.

The `password` key of `<jq>-redis-auth` is the source of truth; a user rotates it by editing that key.
Redis's default user accepts several passwords at once (ACL), so the rotation is a sequence of steps, each
decided from what is observed (the SHA-256 of the Secret's password, the hashes Redis accepts, the Pods'
config hashes) and each done by one reconcile:

1. Redis does not accept the Secret's password: add it (the old one stays accepted);
2. the Secret's `url` key does not carry that password: rewrite it from the `password` key; the config
   hash of the workers, beat and Flower changes with it, so they roll onto the new URL;
3. Redis accepts other passwords too, and no Pod of the JobQueue runs with an older configuration: drop
   them. Connections already logged in stay open; a Redis whose readiness probe was started with the old
   password (made before this operator version) keeps it until it restarts.

The operator logs in with its own user throughout (broker_admin), so no step depends on the password it
changes. A Redis restarted later reads the Secret's password: the same one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

from jobqueue_operator.events import Event
from jobqueue_operator.reasons import Reason

CAUSE: Final = "broker-password"
"""The cause of the rotation's Warnings (events.Event.cause)."""


def digest(password: str) -> str:
    """SHA-256 in hex, as `ACL GETUSER` lists a user's passwords."""
    return hashlib.sha256(password.encode()).hexdigest()


@dataclass(frozen=True)
class Step:
    """What to do to the broker and the Secret now, and what the status says of the password."""

    add: str | None = None
    """A password for the default user to accept as well."""
    url: str | None = None
    """The URL to write into the Secret's `url` key."""
    keep_only: str | None = None
    """The only password the default user keeps."""
    rotating: str | None = None
    """While Redis accepts more than the Secret's password: why, and what the rotation waits for."""
    events: Sequence[Event] = field(default_factory=tuple)

    @property
    def writes(self) -> bool:
        return bool(self.add or self.url or self.keep_only)


def decide(
    secret: str,
    password: str,
    url: str | None,
    wanted_url: str,
    accepted: frozenset[str],
    stale_pods: Sequence[str],
    probe_reads_password: bool,
    accepted_somewhere: frozenset[str] | None = None,
) -> Step:
    """`secret`: the Secret's name; `password`/`url`: its keys now; `wanted_url`: the URL for `password`;
    `accepted`: what Redis accepts; `stale_pods`: Pods of the JobQueue that do not run with the current
    configuration; `probe_reads_password`: the running Redis's readiness probe logs in with the password it
    started with (a Redis made before this operator version). A highly available broker: `accepted` is what
    EVERY member and Sentinel accepts (the new password is added until each does) and `accepted_somewhere`
    what at least one does (an old password is dropped while one still accepts it)."""
    new = digest(password)
    if new not in accepted:
        message = (
            f"Secret {secret} has a new password: Redis accepts it now, and the old one until every Pod of the "
            f"JobQueue runs with the new one; next the Secret's url key is rewritten from it and the workers, "
            f"beat and Flower roll"
        )
        return Step(add=password, rotating=message, events=[Event("Normal", Reason.BROKER_PASSWORD_ROTATING, message)])
    events: list[Event] = []
    rewrite = wanted_url if url != wanted_url else None
    if rewrite is not None:
        message = (
            f"the url key of Secret {secret} did not carry its password key (the source of truth): rewritten "
            f"from it; the Pods that read it roll"
        )
        events.append(Event("Normal", Reason.BROKER_PASSWORD_ROTATING, message))
    old = (accepted if accepted_somewhere is None else accepted_somewhere) - {new}
    if not old:
        return Step(url=rewrite, events=events)
    if rewrite is not None or stale_pods:
        names = ", ".join(sorted(stale_pods)[:5]) + (", ..." if len(stale_pods) > 5 else "")
        waits = f"{len(stale_pods)} Pods ({names})" if stale_pods else "the Pods"
        message = (
            f"Redis accepts the new password of Secret {secret} and {len(old)} older one(s) until every Pod runs "
            f"with the new one: waiting for {waits} to roll"
        )
        return Step(url=rewrite, rotating=message, events=events)
    if probe_reads_password:
        message = (
            f"Redis accepts the new password of Secret {secret} and {len(old)} older one(s): its readiness probe "
            f"was started with the old one, so that stays accepted until Redis restarts onto the current template"
        )
        return Step(rotating=message, events=events)
    message = f"every Pod runs with the new password of Secret {secret}: Redis no longer accepts the old one"
    events.append(Event("Normal", Reason.BROKER_PASSWORD_ROTATED, message))
    return Step(keep_only=password, events=events)
