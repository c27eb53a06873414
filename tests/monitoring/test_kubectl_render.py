"""The plugin's pure text: ages, the last scaling decision from the operator's Events, tables."""

from __future__ import annotations

from jobqueue_kubectl import render

NOW = 1_800_000_000.0


def _stamp(seconds_ago: float) -> str:
    import datetime

    return datetime.datetime.fromtimestamp(NOW - seconds_ago, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def test_ages_read_like_kubectl() -> None:
    assert [render.age(s) for s in (None, 5, 119, 200, 900, 7300, 200000)] == [
        "-",
        "5s",
        "119s",
        "3m20s",
        "15m",
        "2h1m",
        "2d",
    ]


def test_the_last_decision_per_queue_comes_from_scaling_events() -> None:
    events = [
        {
            "reason": "ScaledUp",
            "message": "queue burst: 0 -> 3 workers (WakeFromZero: 150 waiting)",
            "lastTimestamp": _stamp(60),
        },
        {
            "reason": "ScaledDown",
            "message": "queue burst: 3 -> 0 workers (IdleToZero: idle for 10s)",
            "lastTimestamp": _stamp(5),
        },
        {"reason": "MetricQueryFailed", "message": "queue other: Prometheus query failed", "lastTimestamp": _stamp(1)},
    ]
    assert render.last_decisions(events) == {"burst": ("3 -> 0", "IdleToZero", _stamp(5))}


def test_status_table() -> None:
    body = {
        "metadata": {"namespace": "shop", "name": "media"},
        "spec": {"queues": [{"name": "burst"}, {"name": "steady"}]},
        "status": {
            "backlog": 12,
            "workers": "1/4",
            "conditions": [{"type": "Ready", "status": "False", "reason": "BrokerNotReady", "message": "no PING"}],
            "queues": [
                {"name": "burst", "ready": 12, "inFlight": 2, "oldestTaskAgeSeconds": 75, "readyReplicas": 1,
                 "desiredReplicas": 3},
            ],
        },
    }  # fmt: skip
    events = [{"reason": "ScaledUp", "type": "Normal", "message": "queue burst: 1 -> 3 workers (Backlog: 12 waiting)",
               "lastTimestamp": _stamp(30)}]  # fmt: skip
    text = render.status(body, events, NOW)
    assert text.splitlines()[0] == "JobQueue shop/media: Ready=False (BrokerNotReady: no PING)"
    burst = next(line for line in text.splitlines() if line.startswith("burst"))
    assert burst.split()[:5] == ["burst", "12", "2", "75s", "1/3"]
    assert "1 -> 3 (Backlog, 30s ago)" in burst
    steady = next(line for line in text.splitlines() if line.startswith("steady"))
    assert steady.split()[:5] == ["steady", "?", "?", "-", "0/0"]


def test_top_without_jobqueues() -> None:
    assert render.top([], NOW) == "No JobQueues found."
