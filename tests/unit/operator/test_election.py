"""Leader election's pure parts: the timings that keep two leaders from writing at once and a takeover
under 15 s, the identity and the Lease's namespace, and the settings that carry them."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from jobqueue_operator import election
from jobqueue_operator.__main__ import main, operator_settings, parse_args
from jobqueue_operator.settings import OperatorSettings


def test_the_defaults_are_safe_and_take_over_within_15_seconds() -> None:
    lease, renew, retry = (
        election.LEASE_DURATION_SECONDS,
        election.RENEW_DEADLINE_SECONDS,
        election.RETRY_PERIOD_SECONDS,
    )
    assert election.timing_problem(lease, renew, retry) is None
    assert election.takeover_seconds(lease, retry) < 15
    assert renew < lease  # the old leader stops before a standby may take the Lease


@pytest.mark.parametrize(
    ("lease", "renew", "retry", "words"),
    [
        (10, 10, 1, "longer than the renew deadline"),
        (10, 12, 1, "longer than the renew deadline"),
        (10, 2, 2, "longer than 1.2 retry periods"),
    ],
)
def test_unsafe_timings_are_refused_in_one_line(lease: int, renew: float, retry: float, words: str) -> None:
    problem = election.timing_problem(lease, renew, retry)
    assert problem is not None
    assert words in problem
    assert "\n" not in problem


def test_a_leader_is_overdue_only_past_its_renew_deadline() -> None:
    assert not election.overdue(last_renewed=100.0, now=107.0, renew_deadline=7.0)
    assert election.overdue(last_renewed=100.0, now=107.01, renew_deadline=7.0)


def test_the_identity_is_the_pod_name_else_host_and_process() -> None:
    assert election.identity({"POD_NAME": "op-abc"}, "host", 42) == "op-abc"
    assert election.identity({}, "host", 42) == "host-42"


@pytest.mark.parametrize(
    ("chosen", "environ", "watched", "expected"),
    [
        ("mine", {"POD_NAMESPACE": "system"}, ["apps"], "mine"),
        ("", {"POD_NAMESPACE": "system"}, ["apps"], "system"),
        ("", {}, ["team-*", "apps"], "apps"),
        ("", {}, ["team-*"], "default"),
        ("", {}, [], "default"),
    ],
)
def test_the_lease_namespace(chosen: str, environ: dict[str, str], watched: list[str], expected: str) -> None:
    assert election.lease_namespace(chosen, environ, watched) == expected


def test_flags_and_environment_set_the_election(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBQUEUE_LEASE_DURATION_SECONDS", "20")
    monkeypatch.setenv("JOBQUEUE_LEADER_ELECTION", "false")
    args = parse_args(["--lease-name", "mine", "--renew-deadline-seconds", "15", "--leader-election"])
    chosen = operator_settings(args)
    assert (chosen.lease_name, chosen.lease_duration_seconds, chosen.renew_deadline_seconds) == ("mine", 20, 15.0)
    assert chosen.leader_election  # the flag wins over the environment
    assert not operator_settings(parse_args(["--no-leader-election"])).leader_election


def test_settings_refuse_unsafe_timings() -> None:
    with pytest.raises(ValidationError, match="longer than the renew deadline"):
        OperatorSettings(lease_duration_seconds=5, renew_deadline_seconds=7.0)
    with pytest.raises(ValidationError):
        OperatorSettings(retry_period_seconds=0.5)  # the kubernetes client allows no less than 1 s


def test_the_command_line_says_what_is_wrong_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JOBQUEUE_LEASE_DURATION_SECONDS", raising=False)
    with pytest.raises(SystemExit) as exited:
        main(["--lease-duration-seconds", "5"])
    message = str(exited.value)
    assert message.startswith("jobqueue-operator: invalid setting")
    assert "renew deadline" in message
    assert "\n" not in message
