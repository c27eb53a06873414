"""Dead letters: what the worker will not run goes to a bounded list per queue, never silently away.

Celery acknowledges and drops a message it cannot decode, rejects an unknown task or an invalid message,
acknowledges a task that failed for good, and requeues a task whose pool child died without limit (a
task that kills its worker every time loops for ever). Here, in the worker's main process:
- the consumer's handlers for undecodable, refused (pickle), unknown and invalid messages first write
  the dead letter, then let Celery acknowledge or reject as before;
- a task failing for good (its exception, or its hard time limit) is written just before Celery
  acknowledges it, so a crash in between redelivers it instead of losing it;
- a lost pool child counts one loss for the task id (`contract.losses_key`, as the operator's restore of a
  dead worker does); a redelivered message whose task was lost `max_worker_losses` times is
  dead-lettered instead of run again, and the queue keeps flowing.
- a task whose body returned but whose result could not be stored (`ResultNotStored`) is dead-lettered
  as `result-not-stored`, not `failed`: it did its work, and a requeue would do it again. No FAILURE is
  stored for it either (its errbacks are not called: it did not fail), which also spares a second wait
  on the backend that just refused the result.
Each entry keeps the reason, the exception, the traceback and the original message as it was sent, so
`jobqueue-worker deadletter requeue` can send it again unchanged. A failed write is raised to Celery
(the message stays unacknowledged and comes back), never turned into a silent ack.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import Any

from billiard.einfo import ExceptionWithTraceback  # type: ignore[import-untyped]  # billiard: untyped
from billiard.exceptions import WorkerLostError  # type: ignore[import-untyped]
from celery import Celery, bootsteps, signals
from celery.backends.base import Backend
from celery.exceptions import BackendStoreError, Ignore, Reject, Retry, Terminated, TimeLimitExceeded
from celery.utils.objects import Bunch
from celery.utils.serialization import get_pickled_exception
from celery.worker import request as celery_request
from kombu.exceptions import ContentDisallowed, EncodeError

from jobqueue_worker import contract, metrics, resultcheck
from jobqueue_worker.brokerclient import plain_client
from jobqueue_worker.contract import DeadLetter, DeadLetterReason
from jobqueue_worker.settings import WorkerSettings

logger = logging.getLogger(__name__)

EXCEPTION_CHARS = 2000
TRACEBACK_CHARS = 8000
"""Bounds on what an entry stores besides the message itself."""


class ResultNotStored(Exception):
    """The task's body returned, but its result could not be stored in the result backend.

    Raised in the process that ran the task in place of the backend's own error, so that the worker's main
    process (which writes the dead letter) can tell it from a task that raised."""


def envelope(message: Any) -> dict[str, Any]:
    """The kombu message as the transport received it (`_raw` on Redis), without the redelivery marks."""
    raw = getattr(message, "_raw", None)
    if not isinstance(raw, dict):
        raw = {
            "body": message.body if isinstance(message.body, str) else repr(message.body),
            "content-encoding": message.content_encoding,
            "content-type": message.content_type,
            "headers": dict(message.headers or {}),
            "properties": dict(message.properties or {}),
        }
    return contract.as_sent(raw)


def describe(exc: BaseException | None) -> str:
    if exc is None:
        return ""
    return f"{type(exc).__name__}: {exc}"[:EXCEPTION_CHARS]


def _unwrap(exc: BaseException) -> BaseException:
    """Exceptions from a prefork child arrive wrapped (ExceptionWithTraceback) or pickled."""
    if isinstance(exc, ExceptionWithTraceback):
        exc = exc.exc
    return get_pickled_exception(exc)  # type: ignore[no-any-return]


def is_redelivered(message: Any) -> bool:
    delivery = message.delivery_info or {}
    return bool(delivery.get(contract.REDELIVERED) or (message.headers or {}).get(contract.REDELIVERED))


def task_id_of(message: Any) -> str:
    headers = message.headers or {}
    return str(headers.get("id") or (message.properties or {}).get("correlation_id") or "")


class DeadLetters:
    """The queue's dead-letter list and worker-loss counts, for one worker."""

    def __init__(self, app: Celery, settings: WorkerSettings) -> None:
        self._app = app
        self.queue = settings.queue
        self.enabled = settings.dead_letter_enabled
        self.max_length = settings.dead_letter_max_length
        self.max_losses = settings.max_worker_losses
        self._prefix = settings.key_prefix
        self._worker = settings.nodename
        self._jobqueue = settings.name
        self._written: collections.deque[str] = collections.deque(maxlen=1024)
        """Delivery tags already dead-lettered: Celery may report one failure twice (hard time limits)."""

    # -- the list ---------------------------------------------------------------------------------

    def write(self, letter: DeadLetter, delivery_tag: str = "") -> None:
        """LPUSH the entry and trim the list to `max_length` in one MULTI; raises when the broker fails."""
        if delivery_tag and delivery_tag in self._written:
            return
        key = contract.dead_letter_key(self.queue, self._prefix)
        with plain_client(self._app) as client:
            pipe = client.pipeline(transaction=True)
            pipe.lpush(key, letter.to_json())
            pipe.ltrim(key, 0, self.max_length - 1)
            length, _ = pipe.execute()
        if delivery_tag:
            self._written.append(delivery_tag)
        metrics.DEAD_LETTERS.labels(self._jobqueue, self.queue, letter.reason.value).inc()
        what = f"{letter.task}[{letter.task_id}]" if letter.task else "a message"
        logger.error("dead-lettered %s (%s): %s", what, letter.reason.value, letter.exception or "-")
        if int(length) > self.max_length:
            metrics.DEAD_LETTERS_DROPPED.labels(self._jobqueue, self.queue).inc(int(length) - self.max_length)
            logger.warning("the dead-letter list of %s is full (%d): dropped the oldest", self.queue, self.max_length)

    def letter(
        self, reason: DeadLetterReason, message: Any, exc: BaseException | None = None, traceback: str = ""
    ) -> DeadLetter:
        headers = message.headers or {}
        return DeadLetter(
            reason=reason,
            message=envelope(message),
            queue=self.queue,
            exception=describe(exc),
            traceback=(traceback or "")[-TRACEBACK_CHARS:],
            task=str(headers.get("task") or ""),
            task_id=task_id_of(message),
            worker=self._worker,
        )

    # -- worker losses ----------------------------------------------------------------------------

    def _losses_key(self) -> str:
        return contract.losses_key(self.queue, self._prefix)

    def losses(self, task_id: str) -> int:
        """How many times a worker was lost running this task; 0 when unknown or unreadable (run it)."""
        try:
            with plain_client(self._app) as client:
                value = client.hget(self._losses_key(), task_id)
        except Exception as exc:  # the broker's trouble: run the task rather than block the queue
            logger.warning("cannot read the worker losses of %s: %s", task_id, exc)
            return 0
        return int(value or 0)

    def count_loss(self, task_id: str) -> None:
        try:
            with plain_client(self._app) as client:
                pipe = client.pipeline(transaction=True)
                pipe.hincrby(self._losses_key(), task_id, 1)
                pipe.expire(self._losses_key(), contract.LOSSES_TTL_SECONDS)
                pipe.execute()
        except Exception as exc:
            logger.warning("cannot count a worker loss of %s: %s", task_id, exc)

    def forget(self, task_id: str) -> None:
        try:
            with plain_client(self._app) as client:
                client.hdel(self._losses_key(), task_id)
        except Exception as exc:
            logger.warning("cannot clear the worker losses of %s: %s", task_id, exc)

    # -- decisions at delivery ----------------------------------------------------------------------

    def give_up(self, message: Any, losses: int) -> None:
        """A task lost too often: dead-letter (or fail) it, acknowledge it, record FAILURE for its callers."""
        error = WorkerLostError(f"a worker was lost {losses} times running this task; not running it again")
        if self.enabled:
            self.write(self.letter(DeadLetterReason.WORKER_LOST, message, error), message.delivery_tag)
        else:
            logger.error("giving up on %s after %d worker losses (dead letters are off)", task_id_of(message), losses)
        message.ack()
        self.forget(task_id_of(message))
        self._mark_failed(message, error)

    def _mark_failed(self, message: Any, error: BaseException) -> None:
        headers = message.headers or {}
        task_id = task_id_of(message)
        if not task_id:
            return
        try:
            request = {
                "task": headers.get("task"),
                "root_id": headers.get("root_id"),
                "correlation_id": (message.properties or {}).get("correlation_id"),
                "reply_to": (message.properties or {}).get("reply_to"),
                "chord": None,
                "errbacks": None,
            }
            self._app.backend.mark_as_failure(task_id, error, request=Bunch(**request))
        except Exception as exc:  # a result backend that cannot take it: the dead letter is what counts
            logger.warning("cannot record FAILURE of %s in the result backend: %s", task_id, exc)


# -- Celery hooks ---------------------------------------------------------------------------------

_LETTERS: DeadLetters | None = None
_FAILING = "_jobqueue_failure"
"""Request attribute set while Celery handles a final failure: (reason, exception, traceback)."""


class DeadLetterStep(bootsteps.Step):  # type: ignore[misc]  # celery is untyped
    """Wraps the consumer's handlers of messages it will not run, before the task consumer starts."""

    def __init__(self, consumer: Any, **kwargs: Any) -> None:
        super().__init__(consumer, **kwargs)
        letters = _LETTERS
        if letters is None:
            return
        if letters.enabled:
            _wrap_refusals(consumer, letters)
        if letters.max_losses:
            _wrap_task_handler(consumer, letters)


def _reason(exc: BaseException | None, otherwise: DeadLetterReason) -> DeadLetterReason:
    return DeadLetterReason.REFUSED_CONTENT if isinstance(exc, ContentDisallowed) else otherwise


def _wrap_refusals(consumer: Any, letters: DeadLetters) -> None:
    decode_error, unknown_message = consumer.on_decode_error, consumer.on_unknown_message
    unknown_task, invalid_task = consumer.on_unknown_task, consumer.on_invalid_task

    def on_decode_error(message: Any, exc: BaseException) -> None:
        letters.write(letters.letter(_reason(exc, DeadLetterReason.UNDECODABLE), message, exc), message.delivery_tag)
        decode_error(message, exc)

    def on_unknown_message(body: Any, message: Any) -> None:
        letters.write(letters.letter(DeadLetterReason.UNKNOWN_MESSAGE, message), message.delivery_tag)
        unknown_message(body, message)

    def on_unknown_task(body: Any, message: Any, exc: BaseException) -> None:
        name = (message.headers or {}).get("task")
        error = LookupError(f"no task named {name!r} is registered in this worker's app")
        letters.write(letters.letter(DeadLetterReason.UNKNOWN_TASK, message, error), message.delivery_tag)
        unknown_task(body, message, exc)

    def on_invalid_task(body: Any, message: Any, exc: BaseException) -> None:
        letters.write(letters.letter(_reason(exc, DeadLetterReason.INVALID_TASK), message, exc), message.delivery_tag)
        invalid_task(body, message, exc)

    consumer.on_decode_error, consumer.on_unknown_message = on_decode_error, on_unknown_message
    consumer.on_unknown_task, consumer.on_invalid_task = on_unknown_task, on_invalid_task


def _wrap_task_handler(consumer: Any, letters: DeadLetters) -> None:
    create = consumer.create_task_handler

    def create_task_handler(*args: Any, **kwargs: Any) -> Callable[[Any], Any]:
        handle = create(*args, **kwargs)

        def on_task_received(message: Any) -> Any:
            task_id = task_id_of(message)
            if task_id and is_redelivered(message):  # only a redelivered message can have been lost
                losses = letters.losses(task_id)
                if losses >= letters.max_losses:
                    return letters.give_up(message, losses)
            return handle(message)

        return on_task_received

    consumer.create_task_handler = create_task_handler


def _is_worker_lost(request: Any, exc: BaseException) -> bool:
    if isinstance(exc, WorkerLostError):
        return True
    cancelled = request._already_cancelled or request._already_revoked
    return isinstance(exc, SystemExit | KeyboardInterrupt) and not cancelled


def _failure_reason(exc: BaseException) -> DeadLetterReason:
    if isinstance(exc, TimeLimitExceeded):
        return DeadLetterReason.TIME_LIMIT
    if isinstance(exc, ResultNotStored):
        return DeadLetterReason.RESULT_NOT_STORED
    return DeadLetterReason.FAILED


def _why(exc: Exception) -> BaseException:
    """The error that made the store fail: Celery's BackendStoreError, raised once its retries ran out
    (`result_backend_always_retry`), says only that it failed; the last attempt's error says why."""
    context: BaseException | None = exc.__context__
    if isinstance(exc, BackendStoreError) and context is not None:
        return context
    return exc


def _patch_backend() -> None:
    """Patch Celery's result backends (every subclass inherits both methods) in this process, once."""
    if getattr(Backend, "_jobqueue_patched", False):
        return
    mark_as_done, mark_as_failure = Backend.mark_as_done, Backend.mark_as_failure

    def patched_mark_as_done(self: Any, task_id: str, *args: Any, **kwargs: Any) -> Any:
        try:
            return mark_as_done(self, task_id, *args, **kwargs)
        except EncodeError:  # a result that cannot be serialized: Celery stores it as the task's FAILURE
            raise
        except Exception as exc:
            message = (
                f"the task ran and returned, but its result could not be stored in "
                f"{resultcheck.location(self)}: {describe(_why(exc))}"
            )
            raise ResultNotStored(message) from exc

    def patched_mark_as_failure(self: Any, task_id: str, exc: BaseException, *args: Any, **kwargs: Any) -> Any:
        if isinstance(exc, ResultNotStored):
            return None  # it did not fail: no FAILURE, no errbacks; its dead letter says what happened
        return mark_as_failure(self, task_id, exc, *args, **kwargs)

    Backend.mark_as_done, Backend.mark_as_failure = patched_mark_as_done, patched_mark_as_failure
    Backend._jobqueue_patched = True


def _patch_request() -> None:
    """Patch Celery's Request (and so its per-task subclasses) in this process, once."""
    cls = celery_request.Request
    if getattr(cls, "_jobqueue_patched", False):
        return
    on_failure, on_timeout, acknowledge, reject = cls.on_failure, cls.on_timeout, cls.acknowledge, cls.reject

    def write_pending(request: Any) -> bool:
        """Write the dead letter of a final failure being handled; False when it could not be written."""
        pending = request.__dict__.pop(_FAILING, None)
        letters = _LETTERS
        if pending is None or letters is None or not letters.enabled:
            return True
        reason, exc, traceback = pending
        message = request._message
        try:
            letters.write(letters.letter(reason, message, exc, traceback), message.delivery_tag)
        except Exception as error:  # keep the message unacknowledged: it comes back, it is not lost
            logger.error(
                "cannot write the dead letter of %s[%s], leaving it unacknowledged: %s", request.name, request.id, error
            )
            return False
        return True

    def patched_on_failure(self: Any, exc_info: Any, send_failed_event: bool = True, return_ok: bool = False) -> Any:
        exc = _unwrap(exc_info.exception)
        letters = _LETTERS
        if letters is not None and _is_worker_lost(self, exc):
            if not self.acknowledged:
                letters.count_loss(self.id)
        elif letters is not None and not isinstance(exc, Retry | Ignore | Reject | Terminated):
            self.__dict__[_FAILING] = (_failure_reason(exc), exc, str(exc_info.traceback or ""))
        try:
            return on_failure(self, exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        finally:
            _after_failure(self)

    def patched_on_timeout(self: Any, soft: bool, timeout: float) -> Any:
        if not soft and _LETTERS is not None:
            self.__dict__[_FAILING] = (DeadLetterReason.TIME_LIMIT, TimeLimitExceeded(timeout), "")
        try:
            return on_timeout(self, soft, timeout)
        finally:
            _after_failure(self)

    def _after_failure(request: Any) -> None:
        """A failure Celery did not acknowledge here: the message went early (acks_late off), or back."""
        if _FAILING not in request.__dict__:
            return
        state = getattr(request._message, "_state", None)
        if state == "REQUEUED":
            request.__dict__.pop(_FAILING, None)
        else:
            write_pending(request)

    def patched_acknowledge(self: Any) -> Any:
        if not self.acknowledged and not write_pending(self):
            return None
        return acknowledge(self)

    def patched_reject(self: Any, requeue: bool = False) -> Any:
        if requeue:
            self.__dict__.pop(_FAILING, None)
        elif not self.acknowledged and not write_pending(self):
            return None
        return reject(self, requeue=requeue)

    cls.on_failure, cls.on_timeout = patched_on_failure, patched_on_timeout
    cls.acknowledge, cls.reject = patched_acknowledge, patched_reject
    cls._jobqueue_patched = True


def _forget_after_success(sender: Any = None, task_id: str = "", state: str = "", **_: Any) -> None:
    """In the process that ran it: a redelivered task that finished clears its loss count."""
    letters = _LETTERS
    request = getattr(sender, "request", None)
    if letters is None or not letters.max_losses or request is None or not task_id:
        return
    if (getattr(request, "delivery_info", None) or {}).get(contract.REDELIVERED):
        letters.forget(task_id)


def install(app: Celery, settings: WorkerSettings) -> DeadLetters:
    """Hook dead letters and the worker-loss rule into the app; call before the worker is created."""
    global _LETTERS
    _LETTERS = DeadLetters(app, settings)
    app.steps["consumer"].add(DeadLetterStep)
    _patch_request()
    _patch_backend()
    signals.task_postrun.connect(_forget_after_success, weak=False, dispatch_uid="jobqueue_worker.deadletter")
    return _LETTERS
