"""PURE: which mode of the managed broker a reconcile renders, one Redis or highly available (docs/broker.md,
"Switching modes").

Switching a RUNNING broker between the two is not supported yet. Rendering the other mode's objects over a
running broker is not a switch: the `<jq>-redis` Service cannot turn headless in place (its clusterIP is
immutable), the Secret's `url` would move every worker to Sentinels that do not run yet (or back to a
Service that no longer balances to the master), and new members would start before anything decided which
one holds the data. So while a broker runs, the reconcile renders the mode that RUNS, whatever the spec
asks, and says so (BrokerUpToDate False, reason BrokerModeSwitchRefused, and a Warning): the running broker,
its Pods, its Service, its Secret and the tasks it holds stay exactly as they are. A JobQueue whose broker
does not run yet (no `<jq>-redis` StatefulSet) gets the spec's mode."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from jobqueue_operator import naming, status
from jobqueue_operator.build.common import Manifest
from jobqueue_operator.events import Event
from jobqueue_operator.models import JobQueue
from jobqueue_operator.reasons import Reason

CAUSE: Final = "broker-mode"
"""The cause of the refusal's Warning (events.Event.cause): one Event, its count raised."""


@dataclass(frozen=True)
class Mode:
    jq: JobQueue
    """The JobQueue to render: the spec's, with `highAvailability.enabled` set to the running mode's."""
    refused: str | None = None
    """Why the spec's mode is not rendered (one line); None: it is."""


def running_high_availability(name: str, children: Mapping[tuple[str, str], Manifest]) -> bool | None:
    """Whether JobQueue `name`'s running managed broker is highly available; None: none runs (its Redis
    StatefulSet does not exist). Any sign of high availability counts (a Sentinel StatefulSet, a headless
    `<jq>-redis` Service, more than one Redis member): a half-made highly available broker is never taken
    for a single one, whose rendering would scale its members away."""
    statefulset = children.get(("StatefulSet", naming.redis(name)))
    if statefulset is None:
        return None
    service = children.get(("Service", naming.redis(name)))
    headless = ((service or {}).get("spec") or {}).get("clusterIP") == "None"
    members = int(((statefulset.get("spec") or {}).get("replicas")) or 1)
    return headless or members > 1 or ("StatefulSet", naming.sentinel(name)) in children


def refusal(running: bool) -> str:
    """The one line that says the switch is refused, what was kept, and what to do instead."""
    if running:
        wanted, kept = "from high availability back to a single Redis", "highly available broker"
    else:
        wanted, kept = "to high availability", "single Redis"
    return (
        f"switching an existing JobQueue's broker {wanted} is not supported yet: the running {kept} is left "
        f"unchanged and holds its tasks; set spec.broker.managed.highAvailability.enabled back to "
        f"{str(running).lower()}, or create a new JobQueue with the mode you want and move producers and "
        f'tasks to it (docs/broker.md, "Switching modes")'
    )


def decide(jq: JobQueue, children: Mapping[tuple[str, str], Manifest]) -> Mode:
    """The JobQueue to render: `jq` itself, or, when the spec asks a running managed broker to switch modes,
    `jq` with the running mode and the refusal."""
    managed = jq.spec.broker.managed
    running = running_high_availability(jq.name, children)
    if managed is None or running is None or running == managed.high_availability.enabled:
        return Mode(jq)
    ha = managed.high_availability.model_copy(update={"enabled": running})
    broker = jq.spec.broker.model_copy(update={"managed": managed.model_copy(update={"high_availability": ha})})
    pinned = jq.model_copy(update={"spec": jq.spec.model_copy(update={"broker": broker})})
    return Mode(pinned, refusal(running))


def up_to_date(mode: Mode, verdict: status.Verdict | None) -> status.Verdict | None:
    """BrokerUpToDate with the refusal (first) and the broker's own verdict (a held restart, a rotation)."""
    if mode.refused is None:
        return verdict
    if verdict is None or verdict[0] == "True":
        return ("False", Reason.BROKER_MODE_SWITCH_REFUSED, mode.refused)
    return ("False", Reason.BROKER_MODE_SWITCH_REFUSED, f"{mode.refused}; {verdict[2]}")


def events(mode: Mode) -> list[Event]:
    """The refusal's Warning."""
    if mode.refused is None:
        return []
    return [Event("Warning", Reason.BROKER_MODE_SWITCH_REFUSED, mode.refused, cause=CAUSE)]
