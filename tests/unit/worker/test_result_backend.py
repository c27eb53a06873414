"""The result backend check (resultcheck.py), whose backend it is (app.py), and a result that cannot be
stored turned into `ResultNotStored` (deadletter.py) and marked as run in `deadletter list` (admin.py)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from celery import Celery

from jobqueue_worker import admin, deadletter, resultcheck
from jobqueue_worker.app import result_backend
from jobqueue_worker.contract import DeadLetter, DeadLetterReason
from jobqueue_worker.settings import load_settings

ENV = {"JOBQUEUE_APP": "m:app", "JOBQUEUE_QUEUE": "q", "JOBQUEUE_BROKER_URL": "redis://broker:6379/0"}


def _app(backend: str) -> Celery:
    return Celery("t", broker="memory://", backend=backend, set_as_current=False)


def test_the_backend_is_named_without_its_password_and_a_bare_redis_by_where_it_connects() -> None:
    assert resultcheck.location(_app("redis://:secret@cache:6380/2").backend) == "redis://:**@cache:6380/2"
    assert resultcheck.location(_app("redis").backend) == "redis://localhost:6379/0"


def test_whose_backend_it_is_decides_the_fix() -> None:
    theirs = load_settings({**ENV, "JOBQUEUE_RESULT_BACKEND": "redis://r/1"})
    assert result_backend(theirs, "rpc://") == ("redis://r/1", "jobqueue")
    assert result_backend(load_settings(ENV), "redis") == ("redis", "app")
    assert result_backend(load_settings(ENV), None) == ("redis://broker:6379/0", "broker")


def test_nothing_to_check_without_a_backend_or_with_rpc() -> None:
    assert resultcheck.problem(Celery("t", set_as_current=False).backend, "app") is None
    assert resultcheck.problem(_app("rpc://").backend, "app") is None


def test_a_backend_that_fails_its_check_is_one_line_with_the_url_and_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    backend = _app("cache+memory://").backend

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("Error 111 connecting to cache:11211.\nConnection refused.")

    monkeypatch.setattr(backend, "get_task_meta", refuse)
    assert resultcheck.problem(backend, "jobqueue") == (
        "the result backend memory:/// cannot be reached (ConnectionError: Error 111 connecting to "
        "cache:11211. Connection refused.): tasks run but their results are not stored (dead-lettered as "
        "result-not-stored); fix the URL in the Secret of the JobQueue's spec.results.backendSecretRef, or make "
        "that server reachable"
    )


def test_a_backend_that_does_not_answer_in_time_is_reported_as_such(monkeypatch: pytest.MonkeyPatch) -> None:
    backend, release = _app("cache+memory://").backend, threading.Event()
    monkeypatch.setattr(backend, "get_task_meta", lambda *_, **__: release.wait(10))
    try:
        said = resultcheck.problem(backend, "app", timeout=0.2)
    finally:
        release.set()
    assert said is not None
    assert said.startswith("the result backend memory:/// cannot be reached (no answer within 0.2 s): tasks run")


def test_the_checker_reports_each_change_once(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = iter(["down", "down", None, None, "down"])
    monkeypatch.setattr(resultcheck, "problem", lambda backend, origin: next(answers))
    reports: list[str | None] = []
    checker = resultcheck.Checker(_app("cache+memory://"), "app", reports.append)
    assert [checker.once() for _ in range(5)] == ["down", "down", None, None, "down"]
    assert reports == ["down", None, "down"]


def test_a_result_that_cannot_be_stored_is_result_not_stored_and_no_failure_is_stored(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    deadletter._patch_backend()
    backend = _app("cache+memory://").backend
    stored: list[Any] = []

    def refuse(*_: Any, **__: Any) -> None:
        raise ConnectionError("refused")

    monkeypatch.setattr(backend, "store_result", refuse)
    with pytest.raises(deadletter.ResultNotStored) as caught:
        backend.mark_as_done("id-1", 42)
    assert str(caught.value) == (
        "the task ran and returned, but its result could not be stored in memory:///: ConnectionError: refused"
    )
    monkeypatch.setattr(backend, "store_result", lambda *args, **kwargs: stored.append(args))
    assert backend.mark_as_failure("id-1", caught.value) is None
    assert stored == []  # it did not fail: nothing stored, no errbacks
    backend.mark_as_failure("id-2", ValueError("a real failure"))
    assert [args[0] for args in stored] == ["id-2"]
    assert deadletter._failure_reason(caught.value) == DeadLetterReason.RESULT_NOT_STORED
    assert deadletter._failure_reason(ValueError()) == DeadLetterReason.FAILED


def test_the_list_says_a_task_that_ran_runs_again_if_requeued() -> None:
    ran = DeadLetter(DeadLetterReason.RESULT_NOT_STORED, {}, "q", "ResultNotStored: ...", task="t", task_id="1", at=0)
    failed = DeadLetter(DeadLetterReason.FAILED, {}, "q", "ValueError: x", task="t", task_id="2", at=0)
    said = "  result-not-stored  t[1]  ResultNotStored: ...  (it ran: a requeue runs it again)"
    assert admin.line(ran, 10).endswith(said)
    assert admin.line(failed, 10).endswith("  failed             t[2]  ValueError: x")
