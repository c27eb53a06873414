"""The controller's schedule: when each JobQueue's reconcile and tick run (real threads, a fake clock
only where a cadence is checked)."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import controller


def _body(name: str = "m", generation: int = 1, **metadata: Any) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "uid": "u", "generation": generation, **metadata}}


class Recorder:
    def __init__(self, asked: float | None = None) -> None:
        self.runs: list[tuple[str, controller.Key, Mapping[str, Any]]] = []
        self.asked = asked
        self.running: dict[str, int] = {"reconcile": 0, "tick": 0}
        self.overlap = False
        """Two runs of the same job at once (never allowed for one JobQueue)."""
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.release.set()

    def runner(self, job: str) -> controller.Runner:
        def run(key: controller.Key, body: Mapping[str, Any]) -> float | None:
            with self.lock:
                self.running[job] += 1
                self.overlap = self.overlap or self.running[job] > 1
                self.runs.append((job, key, body))
            self.release.wait(10)
            with self.lock:
                self.running[job] -= 1
            return self.asked

        return run

    def count(self, job: str) -> int:
        with self.lock:
            return sum(1 for run in self.runs if run[0] == job)


def _controller(recorder: Recorder, **timing: float) -> controller.Controller:
    chosen = controller.Timing(**{"resync_seconds": 60.0, "tick_seconds": 60.0, **timing})  # type: ignore[arg-type]
    made = controller.Controller(recorder.runner("reconcile"), recorder.runner("tick"), chosen)
    made.start()
    return made


def test_a_new_jobqueue_is_reconciled_at_once_and_its_own_status_writes_do_not_reconcile_it_again() -> None:
    recorder = Recorder()
    made = _controller(recorder)
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("reconcile") == 1, timeout=5, what="the first reconcile")
        made.jobqueue_seen({**_body(), "status": {"conditions": []}, "metadata": {**_body()["metadata"]}})
        made.jobqueue_seen(_body(generation=2))  # a spec change
        wait_until(lambda: recorder.count("reconcile") == 2, timeout=5, what="a reconcile for generation 2")
        assert recorder.runs[-1][2]["metadata"]["generation"] == 2
    finally:
        made.stop()
    assert recorder.count("reconcile") == 2


def test_child_events_in_a_burst_become_one_reconcile() -> None:
    recorder = Recorder()
    made = _controller(recorder)
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("reconcile") == 1, timeout=5, what="the first reconcile")
        for _ in range(20):
            made.poke(("ns", "m"), "reconcile")
        wait_until(lambda: recorder.count("reconcile") == 2, timeout=5, what="one reconcile for the burst")
    finally:
        made.stop()
    assert recorder.count("reconcile") == 2


def test_one_reconcile_at_a_time_and_a_change_meanwhile_is_not_lost() -> None:
    recorder = Recorder()
    recorder.release.clear()
    made = _controller(recorder)
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("reconcile") == 1, timeout=5, what="a reconcile running")
        made.poke(("ns", "m"), "reconcile", 0.0)
        made.poke(("ns", "m"), "reconcile", 0.0)
        recorder.release.set()
        wait_until(lambda: recorder.count("reconcile") == 2, timeout=5, what="the poked reconcile, once")
    finally:
        made.stop()
    assert not recorder.overlap


def test_a_jobqueue_that_did_not_converge_is_retried_when_it_asks() -> None:
    recorder = Recorder(asked=0.05)
    made = _controller(recorder)
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("reconcile") >= 3, timeout=5, what="retries")
    finally:
        made.stop()


def test_ticks_keep_their_cadence_and_a_deleted_jobqueue_is_forgotten() -> None:
    recorder = Recorder()
    forgotten: list[controller.Key] = []
    timing = controller.Timing(resync_seconds=60.0, tick_seconds=0.05)
    made = controller.Controller(recorder.runner("reconcile"), recorder.runner("tick"), timing, forget=forgotten.append)
    made.start()
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("tick") >= 5, timeout=5, what="five ticks")
        made.jobqueue_gone("ns", "m")
        ticks = recorder.count("tick")
        assert forgotten == [("ns", "m")]
        assert made.keys() == []
    finally:
        made.stop()
    assert recorder.count("tick") <= ticks + 1  # at most the one that was running


def test_a_changed_secret_reconciles_the_jobqueues_that_read_it() -> None:
    recorder = Recorder()
    made = _controller(recorder)
    try:
        made.jobqueue_seen(_body("a"))
        made.jobqueue_seen(_body("b"))
        wait_until(lambda: recorder.count("reconcile") == 2, timeout=5, what="both reconciled")
        made.read_by(("ns", "a"), frozenset({("Secret", "url")}))
        made.reference_changed("ns", "Secret", "url")
        made.reference_changed("other", "Secret", "url")
        wait_until(lambda: recorder.count("reconcile") == 3, timeout=5, what="a reconciled again")
    finally:
        made.stop()
    assert [run[1] for run in recorder.runs if run[0] == "reconcile"][-1] == ("ns", "a")


def test_the_next_tick_is_on_the_cadence_after_an_extra_one() -> None:
    now = [100.0]
    made = controller.Controller(
        lambda k, b: None, lambda k, b: None, controller.Timing(tick_seconds=5.0), clock=lambda: now[0]
    )
    made.jobqueue_seen(_body())
    entry = made._entries[("ns", "m")]
    assert entry.first_tick == 105.0
    now[0] = 103.2  # a poked tick between two slots
    assert made._next_tick(entry, now[0]) == 105.0
    now[0] = 117.0  # a slow tick that overran two slots: they are skipped, not run late
    assert made._next_tick(entry, now[0]) == 120.0


def test_a_jobqueue_marked_for_deletion_is_not_reconciled_or_ticked_again() -> None:
    recorder = Recorder()
    made = _controller(recorder, tick_seconds=0.05)
    try:
        made.jobqueue_seen(_body())
        wait_until(lambda: recorder.count("reconcile") == 1 and recorder.count("tick") >= 1, timeout=5, what="runs")
        made.jobqueue_seen(_body(deletionTimestamp="2030-01-01T00:00:00Z"))
        runs = len(recorder.runs)
        made.poke(("ns", "m"), "reconcile", 0.0)
        made.poke(("ns", "m"), "tick", 0.0)
        wait_until(lambda: len(recorder.runs) <= runs + 1, timeout=1, what="nothing more")  # at most one running
        made.jobqueue_seen(_body(generation=2))  # events keep coming while the garbage collector works
        assert made.keys() == [("ns", "m")]
    finally:
        made.stop()
    assert recorder.count("reconcile") == 1
