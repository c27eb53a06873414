"""Every read one reconcile needs, and nothing else: the JobQueue's children and Pods from the API server,
the Secrets and ConfigMaps its Pods read, the external broker's answer to PING, the managed broker's state
(logged in as the operator: the passwords it accepts, the tasks a restart would lose; when it cannot be
read, whether its node is gone), and how many tasks the queues removed from the spec still hold.
`decide` turns this into what to do."""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from pydantic import ValidationError

from jobqueue_operator import broker, broker_admin, broker_restart, broker_sentinel, kube, naming, nodes
from jobqueue_operator.build import children, redis
from jobqueue_operator.build.common import Config, ConfigRef, Manifest, broker_url_ref, references
from jobqueue_operator.build.workers import live_priority_steps
from jobqueue_operator.models import JobQueue
from jobqueue_operator.node_reads import NodeReads
from jobqueue_operator.reconcile import broker_mode
from jobqueue_operator.reconcile.decide import ExternalBroker, World
from jobqueue_operator.reconcile.decide_broker import ManagedBroker


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        parts.append(f"spec.{where}: {item['msg']}" if where else item["msg"])
    return "; ".join(parts)


def _config(client: kube.KubeApi, namespace: str, refs: set[ConfigRef]) -> Config:
    read = {"Secret": client.secret_data, "ConfigMap": client.config_map_data}
    return {ref: read[ref[0]](namespace, ref[1]) for ref in sorted(refs)}


def _external(client: kube.KubeApi, jq: JobQueue) -> ExternalBroker:
    name, key = broker_url_ref(jq)
    data = client.secret_data(jq.namespace, name)
    if data is None:
        return ExternalBroker(missing=f"Secret {name} does not exist")
    url = kube.decoded(data, key)
    if url is None:
        return ExternalBroker(missing=f"Secret {name} has no key {key}")
    try:
        broker.ping(url)
    except broker.BrokerAuthError as exc:
        return ExternalBroker(error=str(exc), auth_failed=True)
    except broker.BrokerError as exc:
        return ExternalBroker(error=str(exc))
    return ExternalBroker()


def _broker_refusals(client: kube.KubeApi, jq: JobQueue, found: Mapping[kube.Key, Manifest]) -> list[Manifest]:
    name = naming.redis(jq.name)
    statefulset = found.get(("StatefulSet", name))
    if statefulset is None or int((statefulset.get("status") or {}).get("replicas") or 0) > 0:
        return []
    return client.failed_create_events(jq.namespace, "StatefulSet", name)


def _running(pod: Mapping[str, Any] | None) -> bool:
    statuses = ((pod or {}).get("status") or {}).get("containerStatuses") or []
    return any("running" in (s.get("state") or {}) for s in statuses)


def _managed(
    client: kube.KubeApi, jq: JobQueue, config: Config, found: Mapping[kube.Key, Manifest], pods: list[Manifest]
) -> ManagedBroker:
    """Log in to the running managed Redis (the operator's own user first, else the Secret's URL) and read
    what the restart and the password decisions need (the tasks it holds only when a restart is pending). A
    highly available broker is read through its Sentinels (`redis.operator_url`), the passwords on every
    member and Sentinel."""
    own = kube.secret_value(client, jq.namespace, naming.redis_operator_secret(jq.name), naming.PASSWORD_KEY)
    data = config.get(("Secret", naming.redis_secret(jq.name)))
    if data is None:  # this reconcile creates it: with this password, which the Pods' config hash uses now
        chosen = secrets.token_hex(24)
        return ManagedBroker(own, chosen, redis.client_url(jq, chosen), missing_secret=True)
    password, url = kube.decoded(data, naming.PASSWORD_KEY), kube.decoded(data, naming.URL_KEY)
    seen = ManagedBroker(operator_password=own, password=password, url=url)
    pod = broker_restart.broker_pod(pods, jq.name)
    ha = redis.high_availability(jq)
    component = naming.COMPONENT_LABEL
    member_pods: list[Mapping[str, Any] | None] = (
        [p for p in pods if ((p.get("metadata") or {}).get("labels") or {}).get(component) == naming.BROKER]
        if ha
        else [pod]
    )
    if not any(_running(member) for member in member_pods):
        return seen  # nothing to read: the StatefulSet's state says why
    statefulset = found.get(("StatefulSet", naming.redis(jq.name)))
    # A highly available broker's members restart without losing tasks (broker_restart.roll_members): no count.
    pending = not ha and broker_restart.stale(statefulset, pod)
    rolling = ha and any(broker_restart.stale(statefulset, member) for member in member_pods)
    candidates = [(redis.operator_url(jq, own), True)] if own else []
    candidates += [(url, False)] if url else []
    try:
        admin_url, state = broker_admin.read_managed(candidates, count_held=pending)
    except broker.BrokerAuthError as exc:
        return replace(seen, error=str(exc), auth_failed=True)
    except broker.BrokerError as exc:
        return replace(seen, error=str(exc))
    looked = broker_sentinel.read(admin_url) if rolling and broker.is_sentinel(admin_url) else None
    return replace(seen, state=state, admin_url=admin_url, members=looked)


def _leftovers(
    client: kube.KubeApi, jq: JobQueue, found: Mapping[kube.Key, Manifest], admin_url: str | None
) -> dict[str, int | None]:
    """Tasks still held by each queue whose worker Deployment exists but whose queue left the spec."""
    listed = {q.name for q in jq.spec.queues}
    removed: dict[str, Manifest] = {}
    for (kind, _), child in found.items():
        queue = naming.queue_of(child.get("metadata") or {})  # the real name: its lists are keyed by it
        if kind == "Deployment" and queue and queue not in listed:
            removed[queue] = child
    if not removed:
        return {}
    name, key = broker_url_ref(jq)
    url = admin_url or kube.secret_value(client, jq.namespace, name, key)
    keys = [broker.QueueKeys(queue, tuple(live_priority_steps(child))) for queue, child in sorted(removed.items())]
    try:
        if url is None:
            raise broker.BrokerError(f"Secret {name} with key {key} does not exist")
        counts = broker.read_counts(url, keys)
    except broker.BrokerError:
        return dict.fromkeys(removed)  # unknown: keep their workers, never delete blind
    return {queue: counts[queue].ready + counts[queue].in_flight for queue in removed}


def _broker_node_lost(
    managed: ManagedBroker | None, pods: list[Manifest], jq: JobQueue, node_reads: NodeReads | None
) -> str | None:
    """Why the managed Redis Pod's node is gone, asked only while Redis cannot be read (None: not gone)."""
    node = nodes.node_of(broker_restart.broker_pod(pods, jq.name) or {})
    if node_reads is None or managed is None or managed.state is not None or not node:
        return None
    return nodes.gone(snapshot, node) if (snapshot := node_reads.snapshot()) is not None else None


def read(client: kube.KubeApi, body: Mapping[str, Any], node_reads: NodeReads | None = None) -> World:
    """Everything the reconcile of `body` reads; `node_reads`: the nodes, shared by every JobQueue."""
    try:
        jq = JobQueue.from_body(dict(body))
    except ValidationError as exc:
        return World(body, None, invalid=_validation_message(exc))
    found = client.children(jq.namespace, jq.name)
    pods = client.pods(jq.namespace, naming.children_selector(jq.name))
    refs = set().union(*(references(child) for child in children.desired(jq)))
    refs.discard(("Secret", naming.redis_operator_secret(jq.name)))  # only Redis reads it; `_managed` reads it
    config = _config(client, jq.namespace, refs)
    running = broker_mode.decide(jq, found).jq  # a refused mode switch: read the broker in the mode it runs
    managed = _managed(client, running, config, found, pods) if jq.spec.broker.managed is not None else None
    return World(
        body,
        jq,
        children=found,
        pods=pods,
        config=config,
        external=_external(client, jq) if jq.spec.broker.external is not None else None,
        broker_refusals=_broker_refusals(client, jq, found) if jq.spec.broker.managed is not None else [],
        leftovers=_leftovers(client, jq, found, managed.admin_url if managed else None),
        managed=managed,
        broker_node_lost=_broker_node_lost(managed, pods, jq, node_reads),
    )
