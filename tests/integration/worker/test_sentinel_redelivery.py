"""The operator's redelivery and memory reserve through Sentinel, against real processes: a `jobqueue-worker`
on a sentinel:// broker (three redis-server and three Sentinel processes, `jobqueue_devenv.sentinel_process`)
holds tasks and is SIGKILLed, then the master is SIGKILLed too; `broker.restore_incarnation`, given the same
sentinel:// URL, finds the worker's registration on the new master and puts exactly its held tasks back (the
registry, the held hash and the queues replicated before the failover); the memory reserve's CONFIG SET
reaches the new master the same way."""

from __future__ import annotations

import os
import signal
import uuid

import pytest

from jobqueue_devenv.sentinel_process import SentinelGroup
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker
from jobqueue_worker import contract, producer
from jobqueue_worker.restore import Restore, RestoreOutcome
from tests.integration.worker.conftest import StartWorker


def test_a_dead_workers_tasks_are_restored_through_the_sentinels_after_a_failover(
    start_worker: StartWorker, queue_name: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    with SentinelGroup.running(tmp_path_factory.mktemp("sentinel")) as group:
        url = group.sentinel_url()
        worker = start_worker(queue_name, redis_url=url, JOBQUEUE_PREFETCH_MULTIPLIER="3")
        app = producer.producer_app(url)
        try:
            producer.send(app, queue_name, "sleep", 4, run_id=uuid.uuid4().hex, kwargs={"seconds": 60})
        finally:
            app.close()

        def holding() -> broker.Incarnation | None:
            found = broker.list_incarnations(url, queues=[queue_name])
            return found[0] if len(found) == 1 and found[0].held == 3 else None

        found = wait_until(holding, timeout=30, what="the worker holding one running and two reserved tasks")
        os.killpg(worker.proc.pid, signal.SIGKILL)  # the Pod's container killed: nothing given back
        worker.proc.wait(10)
        group.master().client().execute_command("WAIT", 2, 5000)  # the replicas have what it held
        old = group.kill_master()
        group.wait_for_new_master(old)

        instance = found.registration.instance
        wait_until(
            lambda: not broker.list_incarnations(url, queues=[queue_name])[0].alive,
            timeout=contract.HEARTBEAT_TTL_SECONDS + 30,
            what="the killed worker's heartbeat to expire, read from the new master",
        )
        assert broker.restore_incarnation(url, instance) == Restore(RestoreOutcome.RESTORED, {queue_name: 3})
        assert broker.read_counts(url, [broker.QueueKeys(queue_name)])[queue_name].ready == 4
        assert broker.list_incarnations(url, queues=[queue_name]) == []

        used, _ = broker.memory_usage(url)
        broker.set_maxmemory(url, used * 4)  # the memory reserve's write lands on the new master
        assert group.master().client().config_get("maxmemory") == {"maxmemory": str(used * 4)}
