"""events.py: one Event per cause, its count raised by repeats within REPEAT_SECONDS (as Kubernetes does)."""

from __future__ import annotations

from jobqueue_operator import events
from jobqueue_operator.events import Event, Posted

CRASH = Event("Warning", "WorkersFailing", "queue q: exit code 1 (Error): boom", cause="q")


def test_a_warnings_key_is_its_cause_else_its_message() -> None:
    assert CRASH.key == "q"
    assert Event("Warning", "ConfigMissing", "Secret s is missing").key == "Secret s is missing"


def test_a_repeat_within_the_window_raises_the_newest_event_of_its_cause() -> None:
    older, newer = Posted("jq.1", "q", 3, 100.0), Posted("jq.2", "q", 5, 400.0)
    other = Posted("jq.3", "other", 9, 450.0)
    assert events.to_raise(CRASH, [older, newer, other], 500.0) == newer


def test_a_changed_message_of_the_same_cause_still_raises_the_same_event() -> None:
    posted = [Posted("jq.1", "q", 1, 0.0)]
    changed = Event("Warning", "WorkersFailing", "queue q: back-off 40s restarting failed container", cause="q")
    assert events.to_raise(changed, posted, 60.0) == posted[0]


def test_a_cause_gone_longer_than_the_window_gets_a_new_event() -> None:
    posted = [Posted("jq.1", "q", 7, 0.0)]
    assert events.to_raise(CRASH, posted, events.REPEAT_SECONDS - 1) == posted[0]
    assert events.to_raise(CRASH, posted, events.REPEAT_SECONDS) is None


def test_an_event_of_another_cause_or_without_one_is_not_raised() -> None:
    assert events.to_raise(CRASH, [Posted("jq.1", "r", 1, 0.0), Posted("jq.2", None, 1, 0.0)], 1.0) is None
    assert events.to_raise(CRASH, [], 1.0) is None


def test_normal_events_are_always_new() -> None:
    created = Event("Normal", "Created", "Created Deployment d")
    assert events.to_raise(created, [Posted("jq.1", created.key, 1, 0.0)], 1.0) is None


def test_one_batch_posts_each_warning_cause_once_with_its_last_message() -> None:
    later = Event("Warning", "WorkersFailing", "queue q: later", cause="q")
    created = Event("Normal", "Created", "Created Deployment d")
    other = Event("Warning", "WorkersFailing", "queue r: x", cause="r")
    assert events.distinct([CRASH, created, other, later, created]) == [later, created, other]
