"""PURE: leader election's numbers and choices; the election itself is leader.py's (the kubernetes client's).

Two replicas run so that one can take over when the other's node dies; only the holder of a
`coordination.k8s.io/v1` Lease writes. The semantics are client-go's: the leader renews the Lease every
`retry` seconds; a standby takes it once it has seen no renewal for `lease` seconds (measured on its own
clock, from when it saw the Lease change); a leader that could not renew for `renew` seconds stops at once
(the process exits and the container restarts it as a standby). Since `renew` < `lease`, the old leader has
stopped before a standby can take over: two leaders never write at once. A standby takes over at worst
`lease + 2 * retry` seconds after the leader's last renewal (it may have looked just before that renewal,
and it looks again only every `retry` seconds): 12 s with the defaults, under the 15 s the operator promises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

LEASE_DURATION_SECONDS: Final = 10
"""client-go's default is 15 s; 10 s keeps a takeover (at worst `takeover_seconds`) under 15 s."""
RENEW_DEADLINE_SECONDS: Final = 7.0
"""3 s before the lease runs out: the margin for a leader's last write and for clocks that tick differently."""
RETRY_PERIOD_SECONDS: Final = 1.0
"""The kubernetes client allows no less than 1 s. Two reads and one write a second on the API server."""
JITTER_FACTOR: Final = 1.2
"""The kubernetes client's: the renew deadline must exceed this many retry periods."""
DEFAULT_LEASE_NAME: Final = "jobqueue-operator"
DEFAULT_NAMESPACE: Final = "default"
WATCHDOG_SECONDS: Final = 0.25
"""How often a leader checks its last renewal against the renew deadline."""


def timing_problem(lease: float, renew: float, retry: float) -> str | None:
    """Why these timings cannot elect safely (one line), or None. The rules are client-go's."""
    if lease <= renew:
        return f"the lease duration ({lease:g} s) must be longer than the renew deadline ({renew:g} s)"
    if renew <= JITTER_FACTOR * retry:
        return f"the renew deadline ({renew:g} s) must be longer than {JITTER_FACTOR:g} retry periods ({retry:g} s)"
    return None


def takeover_seconds(lease: float, retry: float) -> float:
    """The longest a standby waits, after the leader's last renewal, before it holds the Lease."""
    return lease + 2 * retry


def overdue(last_renewed: float, now: float, renew_deadline: float) -> bool:
    """Whether a leader that last renewed at `last_renewed` (monotonic seconds) must stop now."""
    return now - last_renewed > renew_deadline


def identity(environ: Mapping[str, str], hostname: str, pid: int) -> str:
    """The holder identity: the Pod's name (the chart sets POD_NAME), else host and process id. A container
    restarted in the same Pod keeps the identity, which is safe: the process that held it is gone."""
    return environ.get("POD_NAME") or f"{hostname}-{pid}"


def lease_namespace(chosen: str, environ: Mapping[str, str], watched: Sequence[str]) -> str:
    """Where the Lease lives: the one chosen, else the operator Pod's namespace (the chart sets POD_NAMESPACE),
    else the first watched namespace that is a plain name (a host process of the tests: each watches its own),
    else `default`."""
    plain = [n for n in watched if n and all(c.isalnum() or c == "-" for c in n)]
    return chosen or environ.get("POD_NAMESPACE") or (plain[0] if plain else DEFAULT_NAMESPACE)
