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


def _body(**current: object) -> dict[str, object]:
    return {
        "metadata": {"namespace": "shop", "name": "media", "creationTimestamp": _stamp(3600)},
        "spec": {"queues": [{"name": "images"}]},
        "status": {"backlog": 0, "workers": "0/0", "lastObservedTime": _stamp(10), **current},
    }


def _top_row(text: str) -> dict[str, str]:
    """The one JobQueue row of `top`, by column."""
    header, row, *_ = text.splitlines()
    return dict(zip(header.replace("IN FLIGHT", "IN_FLIGHT").split(), row.split(), strict=True))


PAUSED = {
    "type": "ScalingActive",
    "status": "False",
    "reason": "AutoscalingPaused",
    "message": "autoscaling is paused (jobqueue.dev/autoscaling-paused=true): ...; 7 tasks wait meanwhile (images 7)",
}


def test_a_paused_jobqueue_says_paused_in_status_and_top() -> None:
    body = _body(conditions=[{"type": "Ready", "status": "True"}, PAUSED])
    text = render.status(body, [], NOW)
    (line,) = [line for line in text.splitlines() if line.startswith("autoscaling:")]
    assert line.startswith("autoscaling: paused (AutoscalingPaused: autoscaling is paused")
    assert "7 tasks wait meanwhile" in line
    assert _top_row(render.top([body], NOW))["SCALING"] == "paused"


def test_an_active_autoscaler_and_a_jobqueue_without_one() -> None:
    active = _body(conditions=[{"type": "ScalingActive", "status": "True", "reason": "MetricsAvailable"}])
    assert "autoscaling: active" in render.status(active, [], NOW).splitlines()
    assert render.scaling(active) == "active"
    assert render.scaling(_body()) == "-"
    assert not [line for line in render.status(_body(), [], NOW).splitlines() if line.startswith("autoscaling")]


def test_the_status_says_how_old_it_is_and_warns_when_the_operator_stopped_refreshing_it() -> None:
    fresh = render.status(_body(), [], NOW)
    assert "observed 10s ago" in fresh
    assert "warning" not in fresh
    old = _body(lastObservedTime=_stamp(render.STALE_AFTER_SECONDS + 30))
    text = render.status(old, [], NOW)
    assert "observed 2m0s ago" in text
    assert "warning: status last observed 2m0s ago: the operator may not be running" in text
    assert "warning" not in render.status(old, [], NOW, stale_after=600)
    top = render.top([old], NOW)
    assert _top_row(top)["OBSERVED"] == "2m0s"
    assert (
        top.splitlines()[-1] == "warning: status not observed for over 90s: shop/media: the operator may not be running"
    )


def test_a_jobqueue_no_operator_ever_saw_is_stale_once_it_is_old_enough() -> None:
    never = {"metadata": {"namespace": "shop", "name": "new", "creationTimestamp": _stamp(600)}, "spec": {}}
    assert render.stale(never, NOW)
    assert "warning: status never observed by an operator" in render.status(never, [], NOW)
    young = {"metadata": {"namespace": "shop", "name": "new", "creationTimestamp": _stamp(5)}, "spec": {}}
    assert not render.stale(young, NOW)


def test_draining_and_unserved_tasks_are_shown() -> None:
    body = _body(
        backlog=18,
        unservedTasks=3,
        drainingQueues=[{"name": "thumbs", "deployment": "media-thumbs-worker", "tasks": 16}],
        unservedQueues=[{"name": "celery", "tasks": 3}],
        queues=[{"name": "images", "ready": 2, "inFlight": 0}],
    )
    text = render.status(body, [], NOW)
    assert "backlog 18 (16 draining), unserved 3," in text
    lines = text.splitlines()
    draining = lines.index("Draining (left the spec; their workers run until the queue is empty):")
    assert lines[draining + 2].split() == ["thumbs", "16", "media-thumbs-worker"]
    unserved = next(i for i, line in enumerate(lines) if line.startswith("Unserved"))
    assert lines[unserved + 2].split() == ["celery", "3"]
    columns = _top_row(render.top([body], NOW))
    assert (columns["WAITING"], columns["DRAINING"], columns["UNSERVED"]) == ("2", "16", "3")
