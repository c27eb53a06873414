"""Properties that hold for any observation: bounds, safety and the reason."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from jobqueue_operator.autoscaling import History, Observation, Policy, Reason, decide

policies = st.builds(
    lambda lo, span, k, wait, window, idle: Policy(
        min_replicas=lo,
        max_replicas=lo + span,
        concurrency=k,
        target_wait_seconds=wait,
        scale_down_stabilization_seconds=window,
        idle_seconds_before_zero=idle,
    ),
    st.integers(0, 5),
    st.integers(1, 50),
    st.integers(1, 16),
    st.none() | st.floats(1, 600),
    st.floats(0, 600),
    st.floats(0, 600),
)
observations = st.builds(
    Observation,
    ready=st.integers(0, 10_000),
    in_flight=st.integers(0, 1_000),
    replicas=st.integers(0, 60),
    arrival_rate=st.none() | st.floats(0, 500),
    mean_service_seconds=st.none() | st.floats(0.001, 600),
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
