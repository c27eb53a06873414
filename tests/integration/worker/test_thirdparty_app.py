"""A third-party-style app (tests/integration/worker/shop_app.py) run by a real `jobqueue-worker`: its own result
backend (rpc://), routes and time limits are kept; only the broker is the JobQueue's."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from tests.integration.worker import shop_app
from tests.integration.worker.conftest import StartWorker


@pytest.fixture
def shop(redis_server: RedisServer) -> Iterator[Celery]:
    """The app as its producers run it, pointed at the JobQueue's broker (the URL in its Secret)."""
    shop_app.app.conf.broker_url = redis_server.url
    yield shop_app.app
    shop_app.app.close()


def test_the_apps_result_backend_routes_and_limits_are_its_own(
    start_worker: StartWorker, shop: Celery, redis_server: RedisServer
) -> None:
    worker = start_worker("billing", JOBQUEUE_APP="tests.integration.worker.shop_app:app", POD_NAME="shop-billing-0")
    result = shop_app.invoice.delay(7)  # routed to "billing" by the app's own task_routes
    assert result.get(timeout=30) == "invoice-7"  # through rpc://: a Redis backend would never answer here
    # nothing stored in the broker's Redis (which other tests share, so look for this task's own key)
    assert not redis_server.client().exists(f"celery-task-meta-{result.id}")
    replies = wait_until(
        lambda: shop.control.inspect(destination=["billing@shop-billing-0"], timeout=2).conf(),
        timeout=20,
        what="the worker's configuration",
    )
    conf = replies["billing@shop-billing-0"]
    assert conf["result_backend"] == "rpc://"
    assert (conf["task_time_limit"], conf["task_soft_time_limit"]) == (120, 100)
    assert conf["task_acks_late"] is True  # delivery safety is the worker's
    assert "localhost:6379/9" not in str(conf.get("broker_url"))
    assert worker.proc.poll() is None
