"""What the highly available broker's cluster tests read of its Pods: which are ready, and which member the
Sentinels agree is master."""

from __future__ import annotations

import redis
from kubernetes import client

from jobqueue_operator import naming
from jobqueue_operator.build import redis as redis_build
from jobqueue_operator.models import SENTINEL_MEMBERS
from jobqueue_worker.contract import SENTINEL_MASTER_NAME


def ready_pods(core: client.CoreV1Api, namespace: str, component: str, name: str) -> dict[str, str] | None:
    """Pod name -> IP of the JobQueue `name`'s ready Pods of `component`, when all three are ready."""
    selector = f"{naming.JOBQUEUE_LABEL}={name},{naming.COMPONENT_LABEL}={component}"
    pods = core.list_namespaced_pod(namespace, label_selector=selector).items
    ready = {
        p.metadata.name: p.status.pod_ip
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    }
    return ready if len(ready) == SENTINEL_MEMBERS else None


def agreed_master(sentinels: dict[str, str], password: str) -> str | None:
    """The Pod name the Sentinels name master (their answer is its DNS name), when they all agree."""
    answers = set()
    for ip in sentinels.values():
        sentinel = redis.Redis(ip, redis_build.SENTINEL_PORT, password=password, socket_timeout=3)
        try:
            found = sentinel.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME)  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return None
        finally:
            sentinel.close()
        if not found:
            return None
        answers.add(found[0].decode().split(".")[0])
    return answers.pop() if len(answers) == 1 else None
