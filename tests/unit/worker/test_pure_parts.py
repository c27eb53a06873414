"""The small pure pieces: the sent-time header, probe decisions, HTTP routing."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, Counter

from jobqueue_worker import sent_time, server
from jobqueue_worker.probes import Health


def test_stamp_sets_the_send_time_header() -> None:
    headers: dict[str, Any] = {"id": "abc"}
    before = time.time()
    sent_time.stamp(headers=headers)
    assert before <= headers[sent_time.HEADER] <= time.time()


def test_sent_at_reads_the_request_attribute_or_headers_and_tolerates_absence() -> None:
    assert sent_time.sent_at(SimpleNamespace(jobqueue_sent_at=12.5)) == 12.5
    assert sent_time.sent_at(SimpleNamespace(headers={sent_time.HEADER: 7})) == 7.0
    assert sent_time.sent_at(SimpleNamespace(headers=None)) is None
    assert sent_time.sent_at(SimpleNamespace(jobqueue_sent_at="yesterday")) is None


def test_readiness_follows_the_consumer_and_shutdown() -> None:
    health = Health()
    assert health.ready() == (False, "not connected to the broker")
    health.set_connected(True)
    assert health.ready() == (True, "consuming")
    health.set_shutting_down()
    assert health.ready() == (False, "shutting down")


def test_liveness_needs_a_fresh_heartbeat_unless_shutting_down() -> None:
    assert Health(stale_after=60).alive()[0] is True  # the start counts as a beat
    stale = Health(stale_after=0)
    ok, reason = stale.alive()
    assert not ok
    assert reason.startswith("no heartbeat for")
    stale.set_shutting_down()
    assert stale.alive() == (True, "shutting down")


def call(app: server.WSGIApp, path: str) -> tuple[str, bytes]:
    status: list[str] = []
    body = b"".join(
        app({"PATH_INFO": path, "REQUEST_METHOD": "GET", "QUERY_STRING": ""}, lambda s, h: status.append(s))
    )
    return status[0], body


@pytest.fixture
def routes() -> server.WSGIApp:
    registry = CollectorRegistry()
    Counter("jobqueue_worker_probe_test", "A counter.", registry=registry).inc(3)
    health = Health()
    health.set_connected(True)
    return server.wsgi_app(registry, health)


def test_http_routes(routes: server.WSGIApp) -> None:
    status, body = call(routes, "/metrics")
    assert status.startswith("200")
    assert b"jobqueue_worker_probe_test_total 3.0" in body
    assert call(routes, "/readyz") == ("200 OK", b"consuming\n")
    assert call(routes, "/healthz")[0] == "200 OK"
    assert call(routes, "/other")[0].startswith("404")
