"""rates.py beyond the basics (tests/unit/operator/test_scaling_rates.py): the two arrival windows, the
run-time window's count floor, Little's law for runs that have not finished, the oldest task's wait."""

from __future__ import annotations

import pytest

from jobqueue_operator import rates
from jobqueue_operator.rates import Sample, Window


def _fill(*samples: Sample) -> Window:
    window = Window()
    for sample in samples:
        window = rates.add(window, sample)
    return window


def test_a_batch_stops_counting_as_arrivals_once_it_is_older_than_the_fast_window() -> None:
    # 300 tasks arrive at once just after t=0, then nothing: 60 s of 300 / 60 = 5/s would be a phantom stream.
    samples = [Sample(0, 0, 0, 0, 0), *(Sample(t, 300, 0, 0, 0) for t in range(5, 61, 5))]
    assert rates.estimate(_fill(*samples[:2])).arrival_rate == pytest.approx(60.0)  # 300 in the last 5 s
    assert rates.estimate(_fill(*samples)).arrival_rate == pytest.approx(0.0)  # none in the last 20 s


def test_a_steady_stream_reads_the_same_in_both_windows() -> None:
    window = _fill(*(Sample(t, t // 5, 0, 0, 0) for t in range(0, 61, 5)))  # one arrival per 5 s
    assert rates.estimate(window).arrival_rate == pytest.approx(0.2)


def test_the_run_time_spans_enough_completions_not_just_the_last_five_minutes() -> None:
    # A burst of 500 one-second runs, then for 10 minutes only a few 40 s stragglers finish: a 300 s window
    # alone would say 40 s; the count floor keeps the burst in view.
    burst = Sample(100, 0, 500, 500.0, 500.0)
    stragglers = [Sample(100 + 60 * i, 0, 500 + i, 500.0 + 40 * i, 500.0 + 1600 * i) for i in range(1, 11)]
    window = _fill(Sample(0, 0, 0, 0, 0), burst, *stragglers)
    assert window.anchor is not None
    mean = rates.estimate(window).mean_service_seconds
    assert mean is not None
    assert mean < 2.5  # (500 + 400) / 510, not 40


def test_runs_that_have_not_finished_raise_the_run_time_by_littles_law() -> None:
    # 100 ten-millisecond runs finished, then 4 slots busy for 300 s with nothing finishing: the long
    # runs in flight are invisible to the finished ones' mean (0.01 s), not to busy slot-seconds.
    quick = [Sample(0, 0, 0, 0.0, 0.0, in_flight=0), Sample(5, 4, 100, 1.0, 0.01, in_flight=4)]
    stuck = [Sample(t, 4, 100, 1.0, 0.01, in_flight=4) for t in range(10, 311, 10)]
    with_counts = _fill(*quick, *stuck)
    mean = rates.estimate(with_counts).mean_service_seconds
    assert mean is not None
    assert mean > 10.0  # ~1200 slot-seconds over the 100 completions
    without = _fill(*(Sample(s.at, s.backlog, s.completed, s.run_seconds, s.run_seconds_sq) for s in (*quick, *stuck)))
    assert rates.estimate(without).mean_service_seconds == pytest.approx(0.01)


def test_a_steady_queue_keeps_the_finished_runs_mean() -> None:
    # 2 slots busy, one 2 s run finishing per second: Little's law agrees with the mean, which stays.
    window = _fill(*(Sample(t, 2, t, 2.0 * t, 4.0 * t, in_flight=2) for t in range(0, 100, 5)))
    assert rates.estimate(window).mean_service_seconds == pytest.approx(2.0)


@pytest.mark.parametrize(
    ("waiting", "oldest"),
    [
        (0, None),  # nothing waits
        (3, 5.0),  # the 3 newest arrived in the last 5 s
        (5, 10.0),  # 5 go back to the interval before
        (50, 15.0),  # more than ever arrived in the window: its whole span
    ],
)
def test_the_oldest_wait_is_bounded_from_the_counters(waiting: int, oldest: float | None) -> None:
    # entered (backlog + completed) at t = 0, 5, 10, 15: 0, 10, 12, 15
    window = _fill(Sample(0, 0, 0, 0, 0), Sample(5, 6, 4, 4, 4), Sample(10, 6, 6, 6, 6), Sample(15, 7, 8, 8, 8))
    assert rates.oldest_wait(window, waiting) == oldest
