"""One start of `jobqueue-worker` in a Pod: its registration, its heartbeat, its clean exit.

The operator is the one component that knows for certain when a worker Pod is gone; what it cannot know
is which messages that Pod held. Each incarnation therefore:
- registers itself in the hash `contract.WORKERS` (id, queue, Pod name and uid, start time, priority steps);
- keeps `contract.alive_key(id)` alive: a daemon thread of the main process writes it every
  HEARTBEAT_INTERVAL_SECONDS with a TTL of HEARTBEAT_TTL_SECONDS (a thread, not Celery's event loop, so a
  long task on the solo pool does not look like a dead worker);
- records the delivery tags it holds (`held.HeldQoS`).
The operator restores a registered incarnation whose heartbeat has expired and whose Pod is gone
(`jobqueue_operator.broker.restore_incarnation`). A clean exit removes the registration, unless some
message is still held (kombu could not restore it on the way out): then only the heartbeat goes, so
the operator may restore the rest at once.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from celery import Celery

from jobqueue_worker import contract, held, restore
from jobqueue_worker.brokerclient import key_prefix, plain_client
from jobqueue_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

# KEYS: unacked_index, held hash, heartbeat, registry. ARGV: the incarnation id. Returns 1 when it
# unregistered, 0 when a message it delivered is still unacknowledged (same delivery time as held).
END = """
local held = redis.call('HGETALL', KEYS[2])
for i = 1, #held, 2 do
  local score = redis.call('ZSCORE', KEYS[1], held[i])
  if score and tonumber(score) == tonumber(held[i + 1]) then
    redis.call('DEL', KEYS[3])
    return 0
  end
end
redis.call('DEL', KEYS[2], KEYS[3])
redis.call('HDEL', KEYS[4], ARGV[1])
return 1
"""


def registration(settings: WorkerSettings, instance: str | None = None) -> contract.Registration:
    return contract.Registration(
        instance=instance or uuid.uuid4().hex,
        queue=settings.queue,
        pod=settings.pod_name or socket.gethostname(),
        pod_uid=settings.pod_uid,
        namespace=settings.pod_namespace,
        started_at=time.time(),
        priority_steps=tuple(settings.priority_steps),
        pid=os.getpid(),
    )


class Incarnation:
    """The registration and heartbeat of this process; `start` before the worker consumes, `end` after.

    After a lost broker connection the consumer's new channel becomes a new incarnation (`held.Holders`);
    the old one's messages are given back at once by a background thread (`give_back`)."""

    GIVE_BACK_SECONDS = 300.0
    """How long to keep trying to give back a retired incarnation's messages; then the operator's restore
    (once the Pod is gone) or kombu's visibility sweep takes over."""

    def __init__(self, app: Celery, settings: WorkerSettings, interval: float = contract.HEARTBEAT_INTERVAL_SECONDS):
        self._app = app
        self._settings = settings
        self._interval = interval
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False
        self._result_backend_problem: str | None = None
        self.holders = held.Holders(self._new_holder(), successor=self._new_holder, retire=self._retire)

    def _new_holder(self) -> held.Holder:
        new = registration(self._settings)
        return held.Holder(new.instance, new.to_json())

    @property
    def instance(self) -> str:
        return self.holders.current.instance

    def start(self) -> None:
        """Record deliveries from now on and start beating (the first beat right away)."""
        held.install(self.holders)
        self._app.steps["consumer"].add(held.TaskChannel)
        self._thread = threading.Thread(target=self._beat_until_stopped, name="jobqueue-heartbeat", daemon=True)
        self._thread.start()

    def report_result_backend(self, problem: str | None) -> None:
        """What is wrong with the result backend (None: nothing), written with every heartbeat from now on."""
        self._result_backend_problem = problem

    def beat(self) -> None:
        """Write the registration, refresh the heartbeat and the result backend's report (same TTL) in one
        MULTI; a failure is logged, not raised."""
        holder = self.holders.current
        prefix = key_prefix(self._app)
        problem = self._result_backend_problem
        try:
            with plain_client(self._app) as client:
                pipe = client.pipeline(transaction=True)
                pipe.hset(prefix + contract.WORKERS, holder.instance, holder.registration)
                alive = contract.alive_key(holder.instance, prefix)
                pipe.set(alive, f"{time.time():.3f}", ex=contract.HEARTBEAT_TTL_SECONDS)
                report = contract.result_backend_key(holder.instance, prefix)
                if problem is None:
                    pipe.delete(report)
                else:
                    pipe.set(report, problem, ex=contract.HEARTBEAT_TTL_SECONDS)
                pipe.execute()
        except Exception as exc:  # the broker's trouble: the consumer reports it; keep beating
            holder.registered.clear()  # a restarted, empty Redis lost it: the next delivery writes it again
            if not self._failing:
                logger.warning("cannot write the worker's heartbeat to the broker: %s", exc)
            self._failing = True
            return
        holder.registered.set()
        if self._failing:
            logger.info("the worker's heartbeat reaches the broker again")
        self._failing = False

    def _beat_until_stopped(self) -> None:
        while True:
            self.beat()
            if self._stop.wait(self._interval):
                return

    def _retire(self, old: held.Holder) -> None:
        """Called from the consumer at its new channel's first delivery: never block it."""
        threading.Thread(target=self.give_back, args=(old,), name="jobqueue-give-back", daemon=True).start()

    def give_back(self, old: held.Holder) -> restore.Restore | None:
        """Restore what a retired incarnation of this process still holds, retrying while the broker is away.

        Its channel is gone, so none of it can be acknowledged any more (Celery redelivers such tasks);
        no worker loss is counted: the worker was not lost."""
        prefix = key_prefix(self._app)
        deadline = time.monotonic() + self.GIVE_BACK_SECONDS
        while True:
            try:
                with plain_client(self._app) as client:
                    client.delete(contract.alive_key(old.instance, prefix))
                    result = restore.restore(client, old.instance, prefix, count_losses=False)
            except Exception as exc:
                if time.monotonic() >= deadline or self._stop.wait(self._interval):
                    logger.warning("could not give back the messages held before the connection loss: %s", exc)
                    return None
                continue
            if result.total:
                logger.warning("gave back %d messages held before the broker connection was lost", result.total)
            return result

    def end(self) -> bool:
        """Stop beating and unregister (one attempt, bounded timeouts); True when the registration is gone."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        instance = self.instance
        prefix = key_prefix(self._app)
        keys = [
            prefix + contract.UNACKED_INDEX,
            contract.held_key(instance, prefix),
            contract.alive_key(instance, prefix),
            prefix + contract.WORKERS,
        ]
        try:
            with plain_client(self._app) as client:
                done = bool(client.eval(END, len(keys), *keys, instance))
        except Exception as exc:  # the broker's trouble; the operator restores what is left
            logger.warning("could not unregister the worker from the broker: %s", exc)
            return False
        if not done:
            logger.warning("some messages were still held at exit: left registered for the operator to restore")
        return done
