"""Pure decisions of the node agent: back-off, probe verdicts, memory quantities, names, endpoints, and
which containers run as host processes."""

from __future__ import annotations

import pytest

from jobqueue_devenv import images
from jobqueue_devenv.nodeagent import hostprocess, memory
from jobqueue_devenv.nodeagent.backoff import BackOff, should_restart
from jobqueue_devenv.nodeagent.names import ServiceAddress, hosts_file
from jobqueue_devenv.nodeagent.probes import ProbeSpec, ProbeTracker, resolve_port
from jobqueue_devenv.nodeagent.services import ready_endpoints
from jobqueue_devenv.nodeagent.status import ContainerView, pod_status
from jobqueue_operator.build import redis
from jobqueue_operator.models import JobQueueSpec


@pytest.mark.parametrize(
    ("policy", "code", "expected"),
    [("Always", 0, True), ("Always", 1, True), ("OnFailure", 0, False), ("OnFailure", 2, True), ("Never", 1, False)],
)
def test_should_restart(policy: str, code: int, expected: bool) -> None:
    assert should_restart(policy, code) is expected


def test_back_off_doubles_to_the_cap_and_resets_after_a_long_run() -> None:
    backoff = BackOff(base=1, cap=5, reset_after=60)
    delays, delay = [], None
    for _ in range(5):
        delay = backoff.next_delay(delay, ran_for=0.1)
        delays.append(delay)
    assert delays == [1, 2, 4, 5, 5]
    assert backoff.next_delay(5, ran_for=61) == 1


def test_readiness_needs_success_threshold_and_fails_after_failure_threshold() -> None:
    tracker = ProbeTracker(ProbeSpec(success_threshold=2, failure_threshold=2), passing=False)
    assert tracker.record(True, 1) is False
    assert tracker.record(True, 2) is True
    assert tracker.record(False, 3) is True
    assert tracker.record(True, 4) is True
    assert tracker.record(False, 5) is True
    assert tracker.record(False, 6) is False


def test_a_startup_probe_gives_up_after_failure_threshold_failures_in_a_row_and_passes_on_a_success() -> None:
    tracker = ProbeTracker(ProbeSpec(failure_threshold=3), passing=False)
    tracker.record(False, 1)
    tracker.record(False, 2)
    assert not tracker.given_up
    assert tracker.record(True, 3) is True  # started: the liveness and readiness probes take over
    starting = ProbeTracker(ProbeSpec(failure_threshold=2), passing=False)
    starting.record(False, 1)
    starting.record(False, 2)
    assert starting.given_up
    assert not starting.passing


def test_probe_timing_honours_initial_delay_and_period() -> None:
    tracker = ProbeTracker(ProbeSpec(initial_delay=5, period=2), passing=True)
    assert not tracker.due(now=104, started_at=100)
    assert tracker.due(now=105, started_at=100)
    tracker.record(True, 105)
    assert not tracker.due(now=106.5, started_at=100)
    assert tracker.due(now=107, started_at=100)


def test_probe_ports_by_number_or_name() -> None:
    container = {"ports": [{"name": "metrics", "containerPort": 9808}]}
    assert resolve_port(8080, container) == 8080
    assert resolve_port("8080", container) == 8080
    assert resolve_port("metrics", container) == 9808
    with pytest.raises(ValueError, match="no port named"):
        resolve_port("http", container)


@pytest.mark.parametrize(
    ("text", "expected"), [("64Mi", 64 * 2**20), ("1G", 10**9), ("500000", 500000), ("1.5Ki", 1536), ("1e3", 1000)]
)
def test_memory_quantities(text: str, expected: int) -> None:
    assert memory.parse_quantity(text) == expected


def test_tree_pss_counts_this_process() -> None:
    import os

    assert memory.tree_pss_bytes(os.getpid()) > 1_000_000
    assert memory.tree(1, {1: [2, 3], 3: [4]}) == [1, 3, 4, 2]


def test_hosts_file_short_names_only_in_the_own_namespace() -> None:
    services = [ServiceAddress("shop", "redis", "10.213.0.130"), ServiceAddress("ops", "web", "10.213.0.131")]
    text = hosts_file(services, "shop", "worker-1", "10.213.0.5")
    assert "10.213.0.5\tworker-1" in text
    assert "10.213.0.130\tredis.shop.svc.cluster.local redis.shop.svc redis.shop redis\n" in text
    assert "10.213.0.131\tweb.ops.svc.cluster.local web.ops.svc web.ops\n" in text
    assert text.startswith("127.0.0.1\tlocalhost")
    host_view = hosts_file(services, None, base="127.0.0.1 localhost\n")
    assert " redis\n" not in host_view
    assert "redis.shop.svc" in host_view


def test_ready_endpoints_skip_unready_and_group_by_port_name() -> None:
    slices = [
        {
            "ports": [
                {"name": "http", "port": 8080, "protocol": "TCP"},
                {"name": "dns", "port": 53, "protocol": "UDP"},
            ],
            "endpoints": [
                {"addresses": ["10.213.0.3"], "conditions": {"ready": True}},
                {"addresses": ["10.213.0.2"], "conditions": {"ready": False}},
                {"addresses": ["10.213.0.4"], "conditions": {}},
            ],
        }
    ]
    assert ready_endpoints(slices) == {"http": [("10.213.0.3", 8080), ("10.213.0.4", 8080)]}


@pytest.mark.parametrize(
    ("image", "on_host"),
    [
        (hostprocess.HOST_PROCESS_IMAGE, True),  # reserved for tests that want a host process
        ("redis:7.4", False),  # the managed Redis's default: a stand-in image of `make images` (images.STAND_INS)
        ("mher/flower:2.0", False),  # Flower's default: likewise
        ("proj-wroker:dev", False),  # a typo: ErrImagePull, never the command on the host
        ("ignored", False),
        ("", False),
    ],
)
def test_only_the_reserved_image_runs_as_a_host_process(image: str, on_host: bool) -> None:
    assert hostprocess.runs_on_host(image) is on_host


def test_the_stand_ins_are_the_operators_own_defaults() -> None:
    """One fact, one place: the names the stand-ins get come from the operator's models, not a copy."""
    jq = JobQueueSpec.model_validate({"image": "w", "app": "a", "queues": [{"name": "q"}], "flower": {}})
    assert jq.broker.managed is not None
    assert set(images.STAND_INS.values()) == {
        images.qualified(jq.broker.managed.image),
        images.qualified(jq.flower.image),
    }
    assert images.STAND_INS[images.REDIS.reference] == "docker.io/library/redis:7.4"
    assert images.STAND_INS[images.FLOWER.reference] == "docker.io/mher/flower:2.0"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("redis:7.4", "docker.io/library/redis:7.4"),
        ("mher/flower:2.0", "docker.io/mher/flower:2.0"),
        ("docker.io/library/redis:7.4", "docker.io/library/redis:7.4"),
        ("localhost/jobqueue-worker:dev", "localhost/jobqueue-worker:dev"),
        ("registry.example.com:5000/redis:7.4", "registry.example.com:5000/redis:7.4"),
    ],
)
def test_references_are_qualified_as_docker_and_the_kubelet_do(name: str, expected: str) -> None:
    assert images.qualified(name) == expected


def test_the_redis_stand_in_is_laid_out_as_the_official_image() -> None:
    """The StatefulSet's runAsUser/fsGroup (build/redis.py) must fit the official image and this one alike."""
    assert any(f"redis:x:{redis.REDIS_UID}:{redis.REDIS_UID}:" in option for option in images.REDIS.options)
    assert 'CMD ["redis-server"]' in images.REDIS.changes
    assert f"WORKDIR {redis.DATA_DIR}" in images.REDIS.changes


def test_a_pod_with_a_host_process_says_so_in_its_conditions() -> None:
    pod = {
        "spec": {
            "containers": [
                {"name": "redis", "image": hostprocess.HOST_PROCESS_IMAGE},
                {"name": "side", "image": "x:1"},
            ]
        }
    }
    views = [
        ContainerView("redis", "running", ready=True, host_executable="/usr/bin/redis-server"),
        ContainerView("side", "running", ready=True, container_id="runc://abc"),
    ]
    conditions = {c["type"]: c for c in pod_status(pod, views, "10.213.0.9", "127.0.0.1", "t0", "t9")["conditions"]}
    said = conditions[hostprocess.CONDITION]
    assert (said["status"], said["reason"], said["lastTransitionTime"]) == ("True", "NoImageOnLocalCluster", "t9")
    assert said["message"].startswith(
        "container redis runs as a host process (/usr/bin/redis-server) in place of image "
        f"{hostprocess.HOST_PROCESS_IMAGE}, the image reserved for host processes"
    )
    assert "side" not in said["message"]
    later = pod_status({**pod, "status": {"conditions": [said]}}, views, "10.213.0.9", "127.0.0.1", "t0", "t20")
    assert next(c for c in later["conditions"] if c["type"] == hostprocess.CONDITION)["lastTransitionTime"] == "t9"
    on_images = pod_status(pod, [views[1], views[1]], "10.213.0.9", "127.0.0.1", "t0", "t9")
    assert hostprocess.CONDITION not in {c["type"] for c in on_images["conditions"]}
