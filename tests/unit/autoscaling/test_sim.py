"""The simulator's model of scale-down: what the benchmark's interrupted and lost counts rest on."""

from __future__ import annotations

from dataclasses import dataclass, field

from jobqueue_operator import startup
from jobqueue_operator.autoscaling import Policy
from jobqueue_sim.model import Config, Simulation, View
from jobqueue_sim.policies import Jobqueue, Keda
from jobqueue_sim.report import summarize
from jobqueue_sim.trace import TaskSpec


@dataclass
class Scripted:
    """Two pods from the start, one at t=5: a scale-down while both pods run a 100 s task."""

    graceful: bool
    name: str = "scripted"
    reasons: dict[str, int] = field(default_factory=dict)

    def start(self, config: Config) -> int:
        return 2

    def tick(self, view: View) -> int | None:
        return 1 if view.now == 5.0 else None


TWO_LONG_TASKS = [TaskSpec(0.0, 100.0), TaskSpec(0.0, 100.0)]
CONFIG = Config(concurrency=1, grace_s=30.0)


def test_graceful_scale_down_lets_running_tasks_finish() -> None:
    result = Simulation(TWO_LONG_TASKS, Scripted(graceful=True), CONFIG).run()
    assert result.interrupted == 0
    assert [t.done for t in result.tasks] == [100.0, 100.0]
    assert result.worker_seconds() == 200.0  # the draining pod is paid for until its task ends
    assert result.below_in_flight == 1  # one pod for two running tasks


def test_blind_scale_down_kills_after_grace_and_redelivers() -> None:
    result = Simulation(TWO_LONG_TASKS, Scripted(graceful=False), CONFIG).run()
    assert result.interrupted == 1
    redone = [t for t in result.tasks if t.interruptions]
    assert redone[0].start == 100.0  # re-queued at t=35, runs when the surviving pod frees
    assert summarize("x", result, 30.0)["p99_wait_s"] == 100.0


def test_keda_sees_only_the_plain_list_and_ours_sees_every_priority() -> None:
    tasks = [TaskSpec(float(i), 5.0, priority=9) for i in range(20)]
    keda = Keda("keda-default", list_length=5, polling_s=30, min_replicas=0, max_replicas=10, stabilization_s=300)
    blind = summarize("keda", Simulation(tasks, keda, Config()).run(), 30.0)
    ours = Jobqueue("jobqueue-backlog", Policy(max_replicas=10, concurrency=4), tick_s=5)
    seen = summarize("ours", Simulation(tasks, ours, Config()).run(), 30.0)
    assert blind["lost"] == 20  # never activated: LLEN of the plain list stays 0
    assert seen["lost"] == 0
    assert seen["within_slo"] == 1.0


def test_ours_learn_the_pod_start_up_from_the_pods_they_started() -> None:
    ours = Jobqueue("jobqueue-latency", Policy(max_replicas=10, concurrency=4, target_wait_seconds=30), tick_s=5)
    tasks = [TaskSpec(float(i), 5.0) for i in range(40)]
    result = Simulation(tasks, ours, Config(startup_s=25.0)).run()
    assert startup.estimate(ours.learned) == 25.0
    assert summarize("ours", result, 30.0)["lost"] == 0
    assert result.below_in_flight == 0  # never fewer pods than the running tasks occupy
