"""rates.py: arrival rate and run-time statistics from the broker's counters."""

from __future__ import annotations

import pytest

from jobqueue_operator import rates
from jobqueue_operator.rates import Sample, Window


def _fill(*samples: Sample) -> Window:
    window = Window()
    for sample in samples:
        window = rates.add(window, sample)
    return window


def test_one_sample_knows_no_rate() -> None:
    assert rates.estimate(_fill(Sample(0, 5, 0, 0, 0))) == rates.Rates(None, None, 1.0)


def test_arrivals_are_the_backlog_change_plus_completions() -> None:
    # 10 s: backlog 5 -> 8 while 6 finished: 9 arrived, 0.9/s.
    window = _fill(Sample(0, 5, 10, 10.0, 10.0), Sample(10, 8, 16, 16.0, 16.0))
    assert rates.estimate(window).arrival_rate == pytest.approx(0.9)


def test_arrivals_use_only_the_last_minute() -> None:
    window = _fill(Sample(0, 0, 0, 0, 0), Sample(50, 100, 0, 0, 0), Sample(110, 100, 0, 0, 0))
    assert rates.estimate(window).arrival_rate == pytest.approx(0.0)


def test_run_time_mean_and_scv_come_from_the_sums() -> None:
    # Two runs of 1 s and 3 s: mean 2, variance 1, scv 0.25.
    window = _fill(Sample(0, 0, 0, 0, 0), Sample(5, 0, 2, 4.0, 10.0))
    estimate = rates.estimate(window)
    assert estimate.mean_service_seconds == pytest.approx(2.0)
    assert estimate.service_scv == pytest.approx(0.25)


def test_the_last_run_time_is_kept_through_an_idle_spell() -> None:
    window = _fill(Sample(0, 0, 0, 0, 0), Sample(5, 0, 2, 4.0, 10.0), Sample(400, 0, 2, 4.0, 10.0))
    assert [s.at for s in window.samples] == [400]
    assert rates.estimate(window).mean_service_seconds == pytest.approx(2.0)


def test_a_counter_going_backwards_restarts_the_window() -> None:
    window = _fill(Sample(0, 0, 50, 50.0, 50.0), Sample(5, 3, 0, 0.0, 0.0))
    assert len(window.samples) == 1
    assert rates.estimate(window).arrival_rate is None


def test_samples_older_than_the_service_window_are_dropped() -> None:
    window = _fill(*(Sample(t, 0, 0, 0, 0) for t in range(0, 601, 100)))
    assert [s.at for s in window.samples] == [300, 400, 500, 600]
