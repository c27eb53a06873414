"""Properties that hold for any observation: bounds, safety and the reason."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given
from hypothesis import strategies as st

from jobqueue_operator.autoscaling import History, Observation, Policy, Reason, decide, idle_keep_seconds

policies = st.builds(
    lambda lo, span, k, wait, window, idle, up: Policy(
        min_replicas=lo,
        max_replicas=lo + span,
        concurrency=k,
        target_wait_seconds=wait,
        scale_down_stabilization_seconds=window,
        idle_seconds_before_zero=idle,
        startup_seconds=up,
    ),
    st.integers(0, 5),
    st.integers(1, 50),
    st.integers(1, 16),
    st.none() | st.floats(1, 600),
    st.floats(0, 600),
    st.none() | st.floats(0, 600),
    st.floats(0, 300),
)
observations = st.builds(
    lambda obs, ready_share, oldest: replace(
        obs,
        ready_replicas=None if ready_share is None else round(obs.replicas * ready_share),
        oldest_wait_seconds=oldest if obs.ready else None,
    ),
    st.builds(
        Observation,
        ready=st.integers(0, 10_000),
        in_flight=st.integers(0, 1_000),
        replicas=st.integers(0, 60),
        arrival_rate=st.none() | st.floats(0, 500),
        mean_service_seconds=st.none() | st.floats(0.001, 600),
        service_scv=st.floats(0, 50),
    ),
    st.none() | st.floats(0, 1),
    st.none() | st.floats(0, 3600),
)
histories = st.builds(
    History,
    recommendations=st.lists(st.tuples(st.floats(0, 1000), st.integers(0, 60)), max_size=5).map(
        lambda pairs: tuple(sorted(pairs))
    ),
    idle_since=st.none() | st.floats(0, 1000),
)


@given(observations, policies, histories)
def test_replicas_within_bounds_or_held(obs: Observation, policy: Policy, history: History) -> None:
    decision = decide(obs, policy, history, 1000.0)
    if decision.replicas != obs.replicas:
        assert policy.min_replicas <= decision.replicas <= policy.max_replicas
    assert decision.reason in set(Reason)
    assert decision.message
    assert (decision.direction == "up") == (decision.replicas > obs.replicas)
    assert (decision.direction == "down") == (decision.replicas < obs.replicas)


@given(observations, policies, histories)
def test_never_below_in_flight_nor_zero_with_work(obs: Observation, policy: Policy, history: History) -> None:
    decision = decide(obs, policy, history, 1000.0)
    if decision.replicas < obs.replicas:  # any scale-down keeps room for the running tasks
        needed = -(-obs.in_flight // policy.concurrency)
        assert decision.replicas >= min(needed, policy.max_replicas)
    if obs.ready + obs.in_flight > 0:
        assert decision.replicas >= 1


@given(observations, policies, histories)
def test_failed_source_never_changes_replicas(obs: Observation, policy: Policy, history: History) -> None:
    failed = Observation(ready=0, in_flight=0, replicas=obs.replicas, error="timeout")
    decision = decide(failed, policy, history, 1000.0)
    assert decision.replicas == obs.replicas
    assert decision.history.idle_since is None


@given(observations, policies, st.integers(1, 500))
def test_more_waiting_never_means_fewer_replicas(obs: Observation, policy: Policy, more: int) -> None:
    fewer = decide(obs, policy, History(), 1000.0)
    busier = decide(replace(obs, ready=obs.ready + more), policy, History(), 1000.0)
    assert busier.replicas >= fewer.replicas


@given(observations, policies, st.floats(0, 600))
def test_an_older_backlog_never_means_fewer_replicas(obs: Observation, policy: Policy, older: float) -> None:
    now = decide(obs, policy, History(), 1000.0)
    later = decide(
        replace(obs, oldest_wait_seconds=(obs.oldest_wait_seconds or 0.0) + older), policy, History(), 1000.0
    )
    assert later.replicas >= now.replicas


@given(observations, policies, st.floats(0, 300))
def test_a_slower_start_up_never_means_fewer_replicas(obs: Observation, policy: Policy, slower: float) -> None:
    quick = decide(obs, policy, History(), 1000.0)
    slow = decide(obs, replace(policy, startup_seconds=policy.startup_seconds + slower), History(), 1000.0)
    assert slow.replicas >= quick.replicas


@given(observations, policies)
def test_the_automatic_idle_keep_is_at_most_one_start_up(obs: Observation, policy: Policy) -> None:
    keep = idle_keep_seconds(obs, replace(policy, idle_seconds_before_zero=None))
    assert keep in (0.0, policy.startup_seconds)
