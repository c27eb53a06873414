"""startup.py: a queue's pod start-up learned from its Pods' creation and Ready times."""

from __future__ import annotations

from typing import Any

import pytest

from jobqueue_operator import startup
from jobqueue_operator.startup import Learned, PodStart


def _pod(uid: str, created: str, ready_at: str | None, restarts: int = 0, ready: str = "True") -> dict[str, Any]:
    conditions = [{"type": "PodScheduled", "status": "True", "lastTransitionTime": created}]
    if ready_at is not None:
        conditions.append({"type": "Ready", "status": ready, "lastTransitionTime": ready_at})
    return {
        "metadata": {"uid": uid, "creationTimestamp": created},
        "status": {"conditions": conditions, "containerStatuses": [{"name": "worker", "restartCount": restarts}]},
    }


def test_creation_to_ready_is_the_start_up() -> None:
    assert startup.pod_start(_pod("a", "2026-01-02T03:04:05Z", "2026-01-02T03:04:17Z")) == PodStart("a", 12.0)


@pytest.mark.parametrize(
    "pod",
    [
        _pod("a", "2026-01-02T03:04:05Z", None),  # not Ready yet
        _pod("a", "2026-01-02T03:04:05Z", "2026-01-02T03:04:17Z", ready="False"),  # was Ready, is not now
        _pod("a", "2026-01-02T03:04:05Z", "2026-01-02T03:09:17Z", restarts=1),  # Ready again after a restart
        _pod("a", "2026-01-02T03:04:05Z", "2026-01-02T03:04:01Z"),  # clocks disagree
        _pod("a", "2026-01-02T03:04:05Z", "2026-01-02T05:04:05Z"),  # two hours: not a start-up
        _pod("a", "yesterday", "2026-01-02T03:04:17Z"),
        {"metadata": {"creationTimestamp": "2026-01-02T03:04:05Z"}, "status": {}},
        {},
    ],
)
def test_pods_that_cannot_tell_are_left_out(pod: dict[str, Any]) -> None:
    assert startup.pod_start(pod) is None


def test_each_pod_counts_once_and_the_most_recent_are_kept() -> None:
    learned = startup.learn(Learned(), [PodStart("a", 5.0), None, PodStart("a", 5.0), PodStart("b", 7.0)])
    assert [s.uid for s in learned.starts] == ["a", "b"]
    learned = startup.learn(learned, [PodStart("a", 5.0), PodStart("b", 7.0)])  # seen on the next tick too
    assert len(learned.starts) == 2
    many = startup.learn(learned, (PodStart(f"p{i}", float(i)) for i in range(100)))
    assert len(many.starts) == startup.KEEP
    assert many.starts[-1].uid == "p99"


def test_the_estimate_is_an_upper_quartile_of_the_remembered_start_ups() -> None:
    assert startup.estimate(Learned()) is None
    learned = startup.learn(Learned(), (PodStart(str(i), float(s)) for i, s in enumerate([3, 1, 2, 30])))
    assert startup.estimate(learned) == 3.0  # one slow pod does not set the estimate
    assert startup.estimate(startup.learn(Learned(), [PodStart("x", 8.0)])) == 8.0
