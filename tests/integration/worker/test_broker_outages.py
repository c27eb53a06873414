"""The worker against a Redis that is not there yet, or not there any more: it must neither hang
waiting for a connection nor hang on its way out.

"Not there" is the hard case of Kubernetes: connecting to a Service whose Redis Pod is not (or no
longer) running is not refused, it hangs (`conftest.blackhole`).
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import uuid
from collections.abc import Iterator

import celery.exceptions
import pytest

from jobqueue_devenv.redis_process import RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker import producer
from tests.integration.worker.conftest import StartWorker, blackhole


@pytest.fixture
def own_redis(tmp_path_factory: pytest.TempPathFactory) -> RedisServer:
    """A Redis of the test's own, not started yet: the test decides when it comes and goes."""
    return RedisServer(tmp_path_factory.mktemp("redis-own"))


def test_a_worker_started_before_redis_is_ready_soon_after_redis_is_up(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    with blackhole(own_redis.port):
        worker = start_worker(f"q-{uuid.uuid4().hex[:8]}", redis_url=own_redis.url, wait=False)
        # A connection attempt that hangs must give up and be retried, not block the worker for minutes.
        wait_until(lambda: "Cannot connect" in worker.output(), timeout=30, what=f"a failed attempt ({worker.log})")
        assert worker.get("/readyz").status_code == 503
    try:
        own_redis.start()  # same port and password the worker was given
        worker.wait_ready(timeout=45)
    finally:
        own_redis.stop()


def test_sigterm_ends_an_idle_worker_promptly_when_redis_is_gone(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    own_redis.start()
    try:
        queue = f"q-{uuid.uuid4().hex[:8]}"
        worker = start_worker(queue, redis_url=own_redis.url, JOBQUEUE_CONCURRENCY="2")
        sender = producer.producer_app(own_redis.url)
        try:  # the pool children have run tasks (and recorded them) before Redis goes away
            for result in producer.send(sender, queue, "noop", 4):
                result.get(timeout=30)
        finally:
            sender.close()
    finally:
        own_redis.stop()
    with blackhole(own_redis.port):
        wait_until(lambda: worker.get("/readyz").status_code == 503, timeout=30, what="not ready without Redis")
        worker.proc.send_signal(signal.SIGTERM)
        wait_until(lambda: worker.proc.poll() is not None, timeout=30, what=f"the worker gone ({worker.log})")


def test_sigterm_ends_an_idle_worker_when_redis_stops_answering(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    """A Redis that keeps its connections open but never answers (a frozen process, a vanished peer).

    Every command of the shutdown then waits for the socket timeout, so the exit is slower than above,
    but it comes: before, the heartbeat retried for ever and the worker waited for the SIGKILL."""
    own_redis.start()
    try:
        worker = start_worker(f"q-{uuid.uuid4().hex[:8]}", redis_url=own_redis.url, JOBQUEUE_CONCURRENCY="2")
        assert own_redis.proc is not None
        own_redis.proc.send_signal(signal.SIGSTOP)
        try:
            worker.proc.send_signal(signal.SIGTERM)
            # 47-59 s on an idle machine (Celery's own shutdown waits out several socket timeouts in turn), over
            # 90 s once under a loaded CI run: the promise is that it ends by itself, not how fast.
            gone = f"the worker gone ({worker.log})"
            wait_until(lambda: worker.proc.poll() is not None, timeout=200, what=gone)
        finally:
            own_redis.proc.send_signal(signal.SIGCONT)
    finally:
        own_redis.stop()


def _connections_to(port: int) -> list[int]:
    """The local ports of every established TCP connection to 127.0.0.1:`port`."""
    listing = subprocess.run(
        ["ss", "-Htn", "state", "established", f"( dport = :{port} )"], check=True, capture_output=True, text=True
    ).stdout
    return [int(line.split()[2].rsplit(":", 1)[1]) for line in listing.splitlines() if line.strip()]


@contextlib.contextmanager
def silenced(server_port: int, client_ports: list[int]) -> Iterator[None]:
    """Drop every packet of these connections, both ways, from now on: what a client sees when the node
    of its peer loses power (no FIN, no RST, nothing). New connections are not touched."""
    rules = [
        ["OUTPUT", "-o", "lo", "-p", "tcp", "--sport", str(a), "--dport", str(b), "-j", "DROP"]
        for client in client_ports
        for a, b in ((client, server_port), (server_port, client))
    ]
    added: list[list[str]] = []
    try:
        for rule in rules:
            subprocess.run(["iptables", "-I", *rule], check=True, capture_output=True)
            added.append(rule)
        yield
    finally:
        for rule in added:
            subprocess.run(["iptables", "-D", *rule], check=False, capture_output=True)


def test_a_worker_whose_broker_went_silent_consumes_from_the_new_one(
    start_worker: StartWorker, own_redis: RedisServer
) -> None:
    """The broker's node lost power and the broker came back elsewhere (same address, as a Service's).
    The consumer waits in BRPOP on a connection nobody will ever close, which no command timeout covers:
    only the worker's TCP keepalive probes end it (docs/worker-contract.md), and then it must consume
    from the new broker. Without them it waits for hours."""
    own_redis.start()
    queue = f"q-{uuid.uuid4().hex[:8]}"
    try:
        worker = start_worker(queue, redis_url=own_redis.url)
        sender = producer.producer_app(own_redis.url)
        try:
            for result in producer.send(sender, queue, "noop", 1):
                result.get(timeout=30)
        finally:
            sender.close()
        held = _connections_to(own_redis.port)
        assert held, "the worker holds no connection to its broker"
        with silenced(own_redis.port, held):
            own_redis.stop()  # its goodbyes are dropped: the worker's connections stay open on its side
            own_redis.start()  # the "new node": same address, empty
            sender = producer.producer_app(own_redis.url)
            try:
                (result,) = producer.send(sender, queue, "noop", 1)
                try:
                    result.get(timeout=120)
                except celery.exceptions.TimeoutError:
                    pytest.fail(f"the worker did not consume from the new broker ({worker.log})")
            finally:
                sender.close()
    finally:
        own_redis.stop()
