"""The autoscaler's rules, one table row per case."""

from __future__ import annotations

from dataclasses import replace

import pytest

from jobqueue_operator.autoscaling import Decision, History, Observation, Policy, Reason, decide, idle_keep_seconds

BACKLOG = Policy(
    min_replicas=0, max_replicas=20, concurrency=4, scale_down_stabilization_seconds=60, idle_seconds_before_zero=300
)
LATENCY = Policy(min_replicas=0, max_replicas=50, concurrency=4, target_wait_seconds=10, idle_seconds_before_zero=300)


def run(obs: Observation, policy: Policy = BACKLOG, history: History | None = None, now: float = 1000.0) -> Decision:
    return decide(obs, policy, history or History(), now)


@pytest.mark.parametrize(
    ("ready", "in_flight", "replicas", "expected", "reason"),
    [
        (0, 0, 0, 0, Reason.BACKLOG),  # nothing to do, nothing running
        (1, 0, 0, 1, Reason.BACKLOG),  # wake from zero on the first waiting task
        (9, 0, 1, 3, Reason.BACKLOG),  # ceil(9 / 4)
        (8, 8, 2, 4, Reason.BACKLOG),  # in-flight counts: (8 + 8) / 4
        (0, 16, 4, 4, Reason.BACKLOG),  # 0 waiting, 16 running: never under their workers
        (400, 0, 10, 20, Reason.MAX_REPLICAS),  # capped at maxReplicas
    ],
)
def test_backlog_mode(ready: int, in_flight: int, replicas: int, expected: int, reason: Reason) -> None:
    decision = run(Observation(ready=ready, in_flight=in_flight, replicas=replicas))
    assert decision.replicas == expected
    assert decision.reason is reason
    assert decision.message


def test_target_tasks_per_worker_overrides_concurrency() -> None:
    policy = Policy(max_replicas=100, concurrency=4, target_tasks_per_worker=10)
    assert run(Observation(ready=95, in_flight=0, replicas=10), policy).replicas == 10


def test_min_replicas_is_a_floor() -> None:
    policy = Policy(min_replicas=3, max_replicas=10, concurrency=4)
    decision = run(Observation(ready=0, in_flight=0, replicas=0), policy)
    assert (decision.replicas, decision.reason, decision.direction) == (3, Reason.MIN_REPLICAS, "up")


def test_wake_from_zero_reason_when_latency_mode_has_no_rates() -> None:
    decision = run(Observation(ready=1, in_flight=0, replicas=0), LATENCY)
    assert decision.replicas == 1
    assert decision.direction == "up"


def test_scale_up_is_immediate_but_bounded() -> None:
    policy = Policy(max_replicas=1000, concurrency=1, scale_up_pods=16)
    from_two = run(Observation(ready=500, in_flight=0, replicas=2), policy)
    assert (from_two.replicas, from_two.reason, from_two.recommendation) == (18, Reason.SCALE_UP_LIMITED, 500)
    from_hundred = run(Observation(ready=500, in_flight=0, replicas=100), policy)
    assert from_hundred.replicas == 200  # doubling beats +16 once the queue is large


def test_scale_down_waits_for_the_stabilization_window() -> None:
    history = History()
    replicas = 5
    seen = []
    for t in range(0, 121, 10):
        ready = 20 if t == 0 else 0
        decision = decide(Observation(ready=ready, in_flight=4, replicas=replicas), BACKLOG, history, float(t))
        history, replicas = decision.history, decision.replicas
        seen.append((t, replicas, decision.reason))
    # t=0 asks for 6; the next recommendations are 1, but 6 stays in the 60 s window until t=60
    assert [r for t, r, _ in seen if t < 60] == [6, 6, 6, 6, 6, 6]
    assert seen[6][1] == 1
    assert all(reason is Reason.STABILIZING for t, _, reason in seen if 0 < t < 60)


def test_scale_down_goes_to_highest_recommendation_in_window() -> None:
    history = History(recommendations=((950.0, 8), (990.0, 3)))
    decision = run(Observation(ready=4, in_flight=0, replicas=10), BACKLOG, history)
    assert (decision.replicas, decision.direction, decision.reason) == (8, "down", Reason.STABILIZING)


def test_old_recommendations_leave_the_window() -> None:
    history = History(recommendations=((900.0, 8), (939.0, 7)))
    decision = run(Observation(ready=4, in_flight=0, replicas=10), BACKLOG, history)
    assert decision.replicas == 1
    assert [t for t, _ in decision.history.recommendations] == [1000.0]


def test_idle_queue_keeps_one_worker_until_idle_period_then_zero() -> None:
    policy = Policy(concurrency=4, scale_down_stabilization_seconds=0, idle_seconds_before_zero=300)
    idle = Observation(ready=0, in_flight=0, replicas=1)
    first = decide(idle, policy, History(), 0.0)
    assert (first.replicas, first.reason) == (1, Reason.IDLE)
    almost = decide(idle, policy, first.history, 299.0)
    assert almost.replicas == 1
    gone = decide(idle, policy, almost.history, 300.0)
    assert (gone.replicas, gone.reason, gone.direction) == (0, Reason.IDLE_TO_ZERO, "down")


def test_idle_to_zero_ignores_the_stabilization_window() -> None:
    policy = Policy(concurrency=4, scale_down_stabilization_seconds=600, idle_seconds_before_zero=30)
    history = History(recommendations=((990.0, 7),), idle_since=950.0)
    decision = run(Observation(ready=0, in_flight=0, replicas=7), policy, history)
    assert decision.replicas == 0


def test_work_restarts_the_idle_clock() -> None:
    policy = Policy(concurrency=4, idle_seconds_before_zero=30)
    busy = run(Observation(ready=0, in_flight=1, replicas=1), policy, History(idle_since=0.0))
    assert busy.history.idle_since is None
    assert busy.replicas == 1


def test_never_to_zero_with_min_replicas() -> None:
    policy = Policy(min_replicas=1, concurrency=4, scale_down_stabilization_seconds=0, idle_seconds_before_zero=0)
    decision = run(Observation(ready=0, in_flight=0, replicas=3), policy, History(idle_since=0.0))
    assert (decision.replicas, decision.reason) == (1, Reason.MIN_REPLICAS)


def test_lowered_max_replicas_applies_despite_the_window() -> None:
    history = History(recommendations=((990.0, 12),))
    decision = run(Observation(ready=100, in_flight=0, replicas=12), Policy(max_replicas=5, concurrency=4), history)
    assert (decision.replicas, decision.direction) == (5, "down")


def test_pause_holds_everything() -> None:
    policy = Policy(concurrency=4, paused=True)
    decision = run(Observation(ready=1000, in_flight=0, replicas=2), policy)
    assert (decision.replicas, decision.reason, decision.direction) == (2, Reason.PAUSED, "none")


def test_metric_failure_holds_and_restarts_idle_clock() -> None:
    policy = Policy(concurrency=4, idle_seconds_before_zero=10, scale_down_stabilization_seconds=300)
    history = History(idle_since=0.0, recommendations=((999.0, 2),))
    failed = run(Observation(ready=0, in_flight=0, replicas=2, error="redis: connection refused"), policy, history)
    assert (failed.replicas, failed.reason, failed.direction) == (2, Reason.METRICS_UNAVAILABLE, "none")
    assert "connection refused" in failed.message
    assert failed.history.idle_since is None
    assert failed.history.recommendations == history.recommendations
    # the first good tick after the failure starts the idle clock again instead of going to zero
    after = decide(Observation(ready=0, in_flight=0, replicas=2), policy, failed.history, 1001.0)
    assert after.replicas == 2


def test_latency_mode_sizes_from_arrival_rate_and_run_time() -> None:
    # 10 tasks/s x 2 s = 20 busy slots; the Erlang C answer needs a few more, i.e. 6 pods of 4
    obs = Observation(ready=0, in_flight=20, replicas=5, arrival_rate=10.0, mean_service_seconds=2.0)
    decision = run(obs, LATENCY)
    assert decision.reason is Reason.LATENCY
    assert decision.replicas == 6
    assert "busy slots" in decision.message


def test_latency_mode_keeps_what_drains_the_backlog_in_time() -> None:
    # Within 10 s: 400 waiting x 1 s + 10 running x 0.5 s + half the 10/s x 1 s arrivals x 10 s = 455
    # slot-seconds; the 13 pods (520 slot-seconds) can, so the fewest that do: 46 slots, 12 pods.
    obs = Observation(ready=400, in_flight=10, replicas=13, arrival_rate=10.0, mean_service_seconds=1.0)
    decision = run(obs, LATENCY)
    assert (decision.replicas, decision.reason) == (12, Reason.DRAIN)
    assert "start the 400 waiting within 10s" in decision.message


def test_latency_mode_heavier_tails_need_more() -> None:
    policy = Policy(max_replicas=100, concurrency=1, target_wait_seconds=1)
    base = Observation(ready=0, in_flight=0, replicas=30, arrival_rate=10.0, mean_service_seconds=2.0)
    light = run(base, policy).replicas
    heavy = run(Observation(**{**_fields(base), "service_scv": 9.0}), policy).replicas  # type: ignore[arg-type]
    assert heavy > light


def test_latency_mode_never_under_the_in_flight_tasks() -> None:
    # a trickle of arrivals, but 16 long tasks already running: their 4 workers stay
    obs = Observation(ready=0, in_flight=16, replicas=4, arrival_rate=0.01, mean_service_seconds=5.0)
    decision = run(obs, LATENCY)
    assert (decision.replicas, decision.reason) == (4, Reason.IN_FLIGHT)


def test_latency_and_backlog_both_set_take_the_larger() -> None:
    policy = Policy(max_replicas=100, concurrency=4, target_wait_seconds=60, target_tasks_per_worker=2)
    obs = Observation(ready=40, in_flight=0, replicas=1, arrival_rate=0.1, mean_service_seconds=1.0)
    decision = run(obs, policy)
    assert (decision.replicas, decision.reason) == (17, Reason.SCALE_UP_LIMITED)  # bounded to 1 + 16
    assert decision.recommendation == 20  # the backlog rule's 40 / 2, not latency's 1
    assert "at 2/worker" in decision.message


def test_history_window_entries_are_kept_in_order() -> None:
    decision = run(Observation(ready=0, in_flight=0, replicas=0), BACKLOG, History(recommendations=((990.0, 2),)))
    assert decision.history.recommendations == ((990.0, 2), (1000.0, 0))


@pytest.mark.parametrize(
    "kwargs",
    [
        {"min_replicas": 5, "max_replicas": 2},
        {"min_replicas": -1},
        {"concurrency": 0},
        {"target_tasks_per_worker": 0},
        {"target_wait_seconds": 0},
        {"wait_quantile": 1.0},
        {"scale_up_pods": 0},
    ],
)
def test_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match=r"must|need"):
        Policy(**kwargs)  # type: ignore[arg-type]


def _fields(obs: Observation) -> dict[str, object]:
    return {name: getattr(obs, name) for name in Observation.__dataclass_fields__}


DRAIN = Policy(max_replicas=100, concurrency=4, target_wait_seconds=30, startup_seconds=10, idle_seconds_before_zero=0)


def test_a_batch_gets_the_pods_that_start_it_in_time_after_a_start_up() -> None:
    # 400 two-second tasks at zero pods: 800 slot-seconds, of which half the arrivals (none) and nothing
    # running; new pods serve 30 - 10 = 20 s of the 30 s, so 40 slots: 10 pods, not the backlog rule's 100.
    obs = Observation(ready=400, in_flight=0, replicas=0, arrival_rate=0.0, mean_service_seconds=2.0)
    decision = run(obs, DRAIN)
    assert (decision.replicas, decision.reason) == (10, Reason.DRAIN)


def test_the_oldest_wait_shortens_the_time_left() -> None:
    fresh = Observation(ready=400, in_flight=0, replicas=0, arrival_rate=0.0, mean_service_seconds=2.0)
    late = replace(fresh, oldest_wait_seconds=10.0)  # 20 s left, 10 after a start-up: 80 slots
    assert run(late, DRAIN).recommendation == 20 > run(fresh, DRAIN).recommendation


def test_pods_that_are_starting_count_for_part_of_the_time() -> None:
    # 10 pods asked for, none ready yet: they serve from about half a start-up on (25 of 30 s, 1000
    # slot-seconds >= 800), so no more are asked for; ready, they would leave room to spare.
    starting = Observation(ready=400, in_flight=0, replicas=10, arrival_rate=0.0, mean_service_seconds=2.0)
    assert run(replace(starting, ready_replicas=0), DRAIN).replicas == 7  # ceil(800 / 30 / 4)
    short = replace(DRAIN, startup_seconds=50.0)
    assert run(replace(starting, ready_replicas=0), short).replicas > 10  # with a 50 s start-up: too late


def test_no_more_pods_while_the_first_are_starting_and_no_run_time_is_known() -> None:
    waiting = Observation(ready=400, in_flight=0, replicas=16, arrival_rate=5.0, ready_replicas=0)
    held = run(waiting, DRAIN)
    assert (held.replicas, held.reason, held.direction) == (16, Reason.SCALE_UP_LIMITED, "none")
    assert held.recommendation == 100  # the backlog rule, until a run time is known
    ready = run(replace(waiting, ready_replicas=16), DRAIN)
    assert ready.replicas == 32  # then up, by the usual bound


def test_idle_pods_are_kept_only_while_the_next_task_is_due_within_a_start_up() -> None:
    auto = Policy(concurrency=4, startup_seconds=10)
    busy = Observation(ready=0, in_flight=0, replicas=2, arrival_rate=0.5)  # next task due in 2 s
    quiet = replace(busy, arrival_rate=0.05)  # next task due in 20 s: a new pod is cheaper than waiting
    assert idle_keep_seconds(busy, auto) == 10.0
    assert idle_keep_seconds(quiet, auto) == 0.0
    assert decide(quiet, auto, History(), 0.0).replicas == 0
    kept = decide(busy, auto, History(), 0.0)
    assert (kept.replicas, kept.reason) == (1, Reason.IDLE)
    assert decide(busy, auto, kept.history, 10.0).replicas == 0
    fixed = Policy(concurrency=4, idle_seconds_before_zero=60)
    assert idle_keep_seconds(quiet, fixed) == 60.0  # a set idleSecondsBeforeZero wins


def test_no_window_by_default_scales_down_to_the_recommendation() -> None:
    history = History(recommendations=((990.0, 8),))
    decision = run(Observation(ready=4, in_flight=0, replicas=8), Policy(max_replicas=20, concurrency=4), history)
    assert (decision.replicas, decision.direction) == (1, "down")
