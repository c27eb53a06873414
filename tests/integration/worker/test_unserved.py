"""Stranded queues against a real Redis: Celery queues that hold tasks but are not in the spec are found
from the lists themselves (priority lists summed, the key prefix honoured, never KEYS), and purged."""

from __future__ import annotations

import pytest
from celery import Celery

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_operator import broker
from jobqueue_worker import contract, producer
from tests.integration.worker.conftest import ProducerFor

PREFIX = "uq:"


@pytest.fixture
def sender(producer_for: ProducerFor) -> Celery:
    return producer_for(PREFIX)


def test_queues_outside_the_spec_that_hold_tasks_are_found_and_can_be_purged(
    sender: Celery, redis_server: RedisServer, queue_name: str
) -> None:
    client = redis_server.client()
    typo = f"{queue_name}-typo"
    producer.send(sender, queue_name, "noop", 2)  # in the spec
    producer.send(sender, typo, "noop", 5, priorities=(0, 9))  # two priority lists
    sender.send_task("jobqueue_worker.tasks.noop")  # no queue given: Celery's default queue "celery"
    client.lpush(f"{PREFIX}{queue_name}-not-tasks", "plain value")  # a list, but not of tasks
    client.lpush(f"{PREFIX}{contract.DEAD_LETTER_PREFIX}{queue_name}", "{}")
    other = producer.producer_app(redis_server.url, key_prefix="other:")
    try:
        producer.send(other, f"{queue_name}-elsewhere", "noop", 1)  # another JobQueue's prefix
    finally:
        other.close()

    found = broker.unserved_queues(redis_server.url, [queue_name], PREFIX)
    assert found == broker.UnservedQueues({typo: 5, "celery": 1}, complete=True)
    assert broker.unserved_queues(redis_server.url, [queue_name, typo, "celery"], PREFIX).waiting == {}

    assert broker.purge_queue(redis_server.url, broker.QueueKeys(typo), PREFIX) == 5
    assert broker.unserved_queues(redis_server.url, [queue_name], PREFIX).waiting == {"celery": 1}
    assert sum(client.llen(key) for key in contract.queue_lists(typo, prefix=PREFIX)) == 0
    assert client.llen(f"{PREFIX}{queue_name}") == 2  # the others untouched


def test_the_search_is_bounded_and_says_when_it_did_not_see_everything(redis_server: RedisServer) -> None:
    client = redis_server.client()
    with client.pipeline(transaction=False) as pipe:
        for i in range(5000):
            pipe.set(f"bq:filler:{i}", "x")
        pipe.execute()
    partial = broker.unserved_queues(redis_server.url, [], "bq:", budget=1000)
    assert partial.complete is False
    assert broker.unserved_queues(redis_server.url, [], "bq:").complete is True
