"""`kubectl jobqueue deadletters`: the options it hands to the worker's own dead-letter commands (pure)."""

from __future__ import annotations

import pytest

from jobqueue_kubectl import deadletters
from jobqueue_kubectl.errors import PluginError


def test_the_worker_commands_get_the_broker_the_queue_and_its_priority_steps() -> None:
    argv = deadletters.worker_argv("requeue", "redis://:pw@10.0.0.5:6379/0", "high", [0, 3, 6, 9], ["--count", "2"])
    assert argv == [
        "deadletter", "requeue", "--broker-url", "redis://:pw@10.0.0.5:6379/0", "--priority-steps", "0,3,6,9",
        "--queue", "high", "--count", "2",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("action", "count", "ids", "every", "json", "expected"),
    [
        ("list", None, [], False, False, []),
        ("list", 5, [], False, True, ["--count", "5", "--json"]),
        ("requeue", None, ["a", "b"], False, False, ["--id", "a", "--id", "b"]),
        ("requeue", 3, [], False, False, ["--count", "3"]),
        ("purge", None, [], True, False, ["--all"]),
    ],
)
def test_options(action: str, count: int | None, ids: list[str], every: bool, json: bool, expected: list[str]) -> None:
    assert deadletters.options(action, count, ids, every, json) == expected


@pytest.mark.parametrize(
    ("action", "count", "ids", "every", "json", "said"),
    [
        ("list", None, ["a"], False, False, "list takes --count and --json"),
        ("requeue", None, [], False, False, "requeue needs exactly one of --id ID"),
        ("requeue", None, [], True, False, "requeue needs exactly one of --id ID"),
        ("purge", 2, ["a"], False, False, "purge needs exactly one of"),
        ("purge", None, [], True, True, "purge does not take --json"),
        ("list", 0, [], False, False, "--count must be at least 1, not 0"),
    ],
)
def test_a_choice_the_action_does_not_take_is_a_one_line_error(
    action: str, count: int | None, ids: list[str], every: bool, json: bool, said: str
) -> None:
    with pytest.raises(PluginError, match=said):
        deadletters.options(action, count, ids, every, json)
