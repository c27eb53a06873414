"""The node agent runs Pods as local processes: real Deployments, Services, probes, limits and deletion.

Every test talks to the session's real local cluster; the Pods run small programs from
`node_agent_pods/programs.py` (or `redis-server`) on this machine, each in its own network namespace.
"""

from __future__ import annotations

import concurrent.futures
import os
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

from kubernetes import client

from jobqueue_devenv import cluster
from jobqueue_devenv.nodeagent import memory, network
from jobqueue_devenv.nodeagent.hostprocess import HOST_PROCESS_IMAGE
from jobqueue_devenv.waiting import wait_until

# In a folder of its own: the script's folder comes first on sys.path, and tests/integration has an
# `operator` package that would shadow the standard library module.
PROGRAMS = str(Path(__file__).parent / "node_agent_pods" / "programs.py")
DEVENV = Path(__file__).resolve().parents[3] / "devenv"


def program(*args: str) -> list[str]:
    return ["python", PROGRAMS, *args]


def pod_env(namespace: str) -> list[dict[str, Any]]:
    """Downward-API env every test Pod gets; TEST_NS lets the tests find the Pods' processes."""
    return [
        {"name": "TEST_NS", "value": namespace},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]


def processes_of(namespace: str) -> list[int]:
    """Live main processes (not the `sh` of hooks) started for Pods of `namespace`."""
    marker = f"TEST_NS={namespace}\0".encode()
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            environ = Path(entry.path, "environ").read_bytes()
            cmdline = Path(entry.path, "cmdline").read_bytes()
        except OSError:
            continue
        ours = environ.startswith(marker) or b"\0" + marker in environ
        if ours and PROGRAMS.encode() in cmdline and memory.pid_state(int(entry.name)) not in ("Z", "X", ""):
            found.append(int(entry.name))
    return found


def pod_logs(state: cluster.ClusterState, namespace: str, name: str) -> str:
    """What `make logs POD=namespace/name` prints."""
    done = subprocess.run(
        [sys.executable, "-m", "jobqueue_devenv", "--dir", state.directory, "logs", f"{namespace}/{name}"],
        env=dict(os.environ, PYTHONPATH=str(DEVENV)),
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def deployment(name: str, replicas: int, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": spec},
        },
    }


def web_spec(namespace: str, marker_file: Path | None = None) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": "web",
        "image": HOST_PROCESS_IMAGE,
        "command": program("serve", "8080"),
        "env": pod_env(namespace),
        "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
    }
    if marker_file is not None:
        hook = f'echo "$POD_NAME" >> {marker_file}'
        container["lifecycle"] = {"preStop": {"exec": {"command": ["sh", "-c", hook]}}}
    return {"terminationGracePeriodSeconds": 15, "containers": [container]}


def service(name: str, port: int, target: int, selector: dict[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"selector": selector, "ports": [{"name": "main", "port": port, "targetPort": target}]},
    }


def ready_pods(core: client.CoreV1Api, namespace: str, selector: str, count: int) -> list[client.V1Pod] | None:
    pods = [p for p in core.list_namespaced_pod(namespace, label_selector=selector).items]
    ready = [
        p
        for p in pods
        if p.metadata.deletion_timestamp is None
        and any(c.type == "Ready" and c.status == "True" for c in p.status.conditions or [])
    ]
    return ready if len(ready) == count and len(pods) == count else None


def finished_pod(core: client.CoreV1Api, namespace: str, name: str) -> client.V1Pod | None:
    pod = core.read_namespaced_pod(name, namespace)
    return pod if pod.status.phase in ("Succeeded", "Failed") else None


def one_shot_pod(name: str, command: list[str], namespace: str, **container: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {
            "restartPolicy": "Never",
            "containers": [
                {
                    "name": "main",
                    "image": HOST_PROCESS_IMAGE,
                    "command": command,
                    "env": pod_env(namespace),
                    **container,
                }
            ],
        },
    }


def test_three_replicas_run_as_processes_with_own_ips_and_a_service_answers_by_name(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    apps.create_namespaced_deployment(namespace, deployment("web", 3, web_spec(namespace)))
    core.create_namespaced_service(namespace, service("web", 80, 8080, {"app": "web"}))

    pods = wait_until(lambda: ready_pods(core, namespace, "app=web", 3), timeout=30, what="3 ready web pods")

    ips = {p.status.pod_ip for p in pods}
    assert len(ips) == 3, "every Pod has its own IP"
    assert len(processes_of(namespace)) == 3, "every Pod is a process of its own"
    for pod in pods:  # each Pod answers on its own IP, on the same port as the others
        with urllib.request.urlopen(f"http://{pod.status.pod_ip}:8080/", timeout=5) as response:
            assert response.read().decode().split() == [pod.metadata.name, pod.status.pod_ip]

    for name, url in (("short", "http://web/"), ("full", f"http://web.{namespace}.svc.cluster.local:80/")):
        core.create_namespaced_pod(namespace, one_shot_pod(f"client-{name}", program("fetch", url), namespace))
        done = wait_until(lambda n=name: finished_pod(core, namespace, f"client-{n}"), timeout=30, what="client pod")
        logs = pod_logs(local_cluster, namespace, f"client-{name}")
        assert done.status.phase == "Succeeded", logs
        assert "fetched web-" in logs
        answered_by = logs.split("fetched ")[1].split()[0]
        assert answered_by in {p.metadata.name for p in pods}


def test_scaling_down_terminates_gracefully_and_scaling_up_again_works(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    stopped_file = tmp_path / "prestop"
    apps.create_namespaced_deployment(namespace, deployment("web", 3, web_spec(namespace, stopped_file)))
    pods = wait_until(lambda: ready_pods(core, namespace, "app=web", 3), timeout=30, what="3 ready web pods")

    def slow_request(ip: str) -> str:
        with urllib.request.urlopen(f"http://{ip}:8080/slow", timeout=30) as response:
            return response.read().decode()

    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        in_flight = [pool.submit(slow_request, p.status.pod_ip) for p in pods]
        wait_until(
            lambda: all("started /slow" in pod_logs(local_cluster, namespace, p.metadata.name) for p in pods),
            timeout=10,
            what="the slow requests reached every pod",
        )
        apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 1}})
        answers = [future.result() for future in in_flight]

    assert sorted(a.split()[0] for a in answers) == sorted(p.metadata.name for p in pods), "in-flight requests finish"
    (kept,) = wait_until(lambda: ready_pods(core, namespace, "app=web", 1), timeout=30, what="one pod left")
    wait_until(lambda: len(processes_of(namespace)) == 1, timeout=15, what="one web process left")
    deleted = {p.metadata.name for p in pods} - {kept.metadata.name}
    assert set(stopped_file.read_text().split()) == deleted, "the preStop hook ran in each deleted Pod"
    for name in deleted:
        logs = pod_logs(local_cluster, namespace, name)
        assert "got SIGTERM" in logs
        assert logs.index("got SIGTERM") < logs.index("served /slow") < logs.index("drained, exiting")

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, what="no pods")
    wait_until(lambda: not processes_of(namespace), timeout=15, what="no web processes")

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 2}})
    again = wait_until(lambda: ready_pods(core, namespace, "app=web", 2), timeout=30, what="2 ready pods again")
    assert len({p.status.pod_ip for p in again}) == 2
    assert len(processes_of(namespace)) == 2


def container_status(core: client.CoreV1Api, namespace: str, name: str) -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(name, namespace).status.container_statuses
    return statuses[0] if statuses else None


def test_a_crashing_container_is_restarted_with_back_off(core: client.CoreV1Api, namespace: str) -> None:
    pod = one_shot_pod("crash", program("crash", "3"), namespace)
    pod["spec"]["restartPolicy"] = "Always"
    core.create_namespaced_pod(namespace, pod)

    seen_back_off = []

    def restarted_twice() -> client.V1ContainerStatus | None:
        status = container_status(core, namespace, "crash")
        if status and status.state.waiting and status.state.waiting.reason == "CrashLoopBackOff":
            seen_back_off.append(status.restart_count)
        return status if status and status.restart_count >= 2 else None

    status = wait_until(restarted_twice, timeout=30, what="restartCount >= 2", interval=0.05)
    assert status.last_state.terminated.exit_code == 3
    assert status.last_state.terminated.reason == "Error"
    assert seen_back_off, "between runs the container waits in CrashLoopBackOff"
    assert core.read_namespaced_pod("crash", namespace).status.phase == "Running"


def test_a_failing_liveness_probe_restarts_the_container(core: client.CoreV1Api, namespace: str) -> None:
    pod = one_shot_pod("unhealthy", program("sleep"), namespace)
    pod["spec"]["restartPolicy"] = "Always"
    pod["spec"]["terminationGracePeriodSeconds"] = 2
    pod["spec"]["containers"][0]["livenessProbe"] = {
        "exec": {"command": ["sh", "-c", 'test "$TEST_NS" = never']},
        "periodSeconds": 1,
        "failureThreshold": 2,
    }
    core.create_namespaced_pod(namespace, pod)
    status = wait_until(
        lambda: (s := container_status(core, namespace, "unhealthy")) and s.restart_count >= 1 and s,
        timeout=30,
        what="a restart after liveness failures",
    )
    assert status.last_state.terminated.exit_code == 143, "stopped with SIGTERM"


def test_a_startup_probe_holds_the_liveness_probe_back_until_it_passes(core: client.CoreV1Api, namespace: str) -> None:
    """As in the kubelet: a container that takes 3 s to start is not killed by a liveness probe that fails
    until then (the managed HA broker's member waits up to 25 s for a promotion before Redis listens)."""
    marker = Path(f"/tmp/jq-startup-{namespace}")
    pod = one_shot_pod("slow", ["sh", "-c", f"sleep 3 && touch {marker} && exec sleep 600"], namespace)
    pod["spec"]["restartPolicy"] = "Always"
    pod["spec"]["terminationGracePeriodSeconds"] = 1
    started = {"exec": {"command": ["test", "-f", str(marker)]}, "periodSeconds": 1}
    container = pod["spec"]["containers"][0]
    container.update(
        startupProbe={**started, "failureThreshold": 30},
        livenessProbe={**started, "failureThreshold": 1},
        readinessProbe=started,
    )
    try:
        core.create_namespaced_pod(namespace, pod)

        def ready() -> bool:
            conditions = core.read_namespaced_pod("slow", namespace).status.conditions or []
            return any(c.type == "Ready" and c.status == "True" for c in conditions)

        wait_until(ready, timeout=60, what="the slow starter Ready")
        status = container_status(core, namespace, "slow")
        assert status is not None
        assert status.restart_count == 0, "the liveness probe ran before the startup probe passed"
    finally:
        marker.unlink(missing_ok=True)


def test_a_container_over_its_memory_limit_is_oom_killed(core: client.CoreV1Api, namespace: str) -> None:
    core.create_namespaced_pod(
        namespace,
        one_shot_pod("hog", program("hog", "300"), namespace, resources={"limits": {"memory": "100Mi"}}),
    )
    pod = wait_until(lambda: finished_pod(core, namespace, "hog"), timeout=30, what="hog pod finished")
    terminated = pod.status.container_statuses[0].state.terminated
    assert (pod.status.phase, terminated.reason, terminated.exit_code) == ("Failed", "OOMKilled", 137)


def test_a_prefork_worker_recycling_children_below_its_limit_is_not_killed(
    core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    limit = 160 * 2**20
    command = program("prefork", "60", "3", "10")  # 60 MB shared by a parent and 3 children of 10 MB each
    core.create_namespaced_pod(
        namespace, one_shot_pod("prefork", command, namespace, resources={"limits": {"memory": "160Mi"}})
    )
    wait_until(lambda: processes_of(namespace), timeout=30, what="prefork process")

    def rss_sum() -> int:
        children = memory.children_map()
        pids = processes_of(namespace)
        (main,) = [pid for pid in pids if not any(pid in children.get(other, []) for other in pids)]
        total = 0
        for pid in memory.tree(main, children):
            status = Path(f"/proc/{pid}/status").read_text()
            total += int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1]) * 1024
        return total

    biggest = wait_until(lambda: (r := rss_sum()) > limit and r, timeout=20, what="RSS sum over the limit")
    assert biggest > limit, "summing RSS would have killed it: the shared pages count once per child"
    wait_until(
        lambda: "recycled 9" in pod_logs(local_cluster, namespace, "prefork"), timeout=30, what="9 recycled children"
    )
    status = container_status(core, namespace, "prefork")
    assert status.state.running is not None
    assert status.restart_count == 0


def test_redis_with_a_password_from_a_secret_is_reached_by_service_name(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    core.create_namespaced_secret(namespace, {"metadata": {"name": "redis"}, "stringData": {"password": "pa55word"}})
    password = {"name": "REDIS_PASSWORD", "valueFrom": {"secretKeyRef": {"name": "redis", "key": "password"}}}
    redis_spec = {
        "containers": [
            {
                "name": "redis",
                "image": HOST_PROCESS_IMAGE,
                "command": ["redis-server", "--port", "6379", "--requirepass", "$(REDIS_PASSWORD)", "--save", ""],
                "env": [*pod_env(namespace), password],
                "readinessProbe": {
                    "exec": {
                        "command": ["sh", "-c", 'redis-cli --no-auth-warning -a "$REDIS_PASSWORD" ping | grep PONG']
                    },
                    "periodSeconds": 1,
                },
            }
        ]
    }
    # Two Redis Pods, both on port 6379, side by side.
    apps.create_namespaced_deployment(namespace, deployment("redis", 2, redis_spec))
    core.create_namespaced_service(namespace, service("redis", 6379, 6379, {"app": "redis"}))
    wait_until(lambda: ready_pods(core, namespace, "app=redis", 2), timeout=30, what="2 ready redis pods")

    # A real client retries while a new Service's endpoints appear; so does this one (up to 20 s).
    script = (
        "import os, time, redis\n"
        "good = redis.Redis(host='redis', port=6379, password=os.environ['REDIS_PASSWORD'], socket_timeout=5)\n"
        "for attempt in range(40):\n"
        "    try:\n        answer = good.ping(); break\n"
        "    except (redis.ConnectionError, redis.TimeoutError) as exc:\n"
        "        print('retrying:', exc, flush=True); time.sleep(0.5)\n"
        "print('ping', answer, flush=True)\n"
        f"bad = redis.Redis(host='redis.{namespace}.svc', port=6379, password='wrong')\n"
        "try:\n    bad.ping()\nexcept redis.AuthenticationError:\n    print('wrong password refused', flush=True)\n"
    )
    client_pod = one_shot_pod("client", ["python", "-c", script], namespace)
    client_pod["spec"]["containers"][0]["env"].append(password)
    core.create_namespaced_pod(namespace, client_pod)
    pod = wait_until(lambda: finished_pod(core, namespace, "client"), timeout=30, what="client pod finished")
    logs = pod_logs(local_cluster, namespace, "client")
    assert pod.status.phase == "Succeeded", logs
    assert "ping True" in logs
    assert "wrong password refused" in logs


def test_a_host_process_whose_executable_is_missing_waits_with_create_container_error(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, one_shot_pod("missing", ["no-such-program-jq"], namespace))

    def waiting(reason: str) -> client.V1ContainerStatus:
        status = container_status(core, namespace, "missing")
        if status is None or status.state.waiting is None or status.state.waiting.reason != reason:
            raise AssertionError(status and status.state)
        return status

    first = wait_until(lambda: waiting("CreateContainerError"), timeout=30, what="CreateContainerError")
    assert 'executable "no-such-program-jq" not found in PATH' in first.state.waiting.message
    assert core.read_namespaced_pod("missing", namespace).status.phase == "Pending"

    core.create_namespaced_pod(namespace, one_shot_pod("fine", program("sleep"), namespace))
    wait_until(
        lambda: core.read_namespaced_pod("fine", namespace).status.phase == "Running",
        timeout=30,
        what="the agent still runs other pods",
    )


def link_mac(interface: str, netns: str | None = None) -> str:
    where = ["-n", netns] if netns else []
    done = subprocess.run(["ip", *where, "-o", "link", "show", interface], capture_output=True, text=True, check=True)
    return done.stdout.split("link/ether ")[1].split()[0]


def test_pods_coming_and_going_change_no_mac_address_another_pod_has_cached(
    apps: client.AppsV1Api, core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState
) -> None:
    """A Linux bridge takes the lowest MAC of its ports unless one is set: every Pod added or removed then
    moved the gateway and all Service addresses under the other Pods' ARP caches (connections to Redis
    timed out for half a minute). The bridge and every Pod address have fixed MACs instead."""
    block = network.Block.load(Path(local_cluster.directory))
    assert block is not None
    assert link_mac(block.bridge) == block.mac(1)

    apps.create_namespaced_deployment(namespace, deployment("web", 2, web_spec(namespace)))
    pods = wait_until(lambda: ready_pods(core, namespace, "app=web", 2), timeout=30, what="2 ready web pods")
    for pod in pods:
        host = int(pod.status.pod_ip.rsplit(".", 1)[1])
        assert link_mac("eth0", block.netns(host)) == block.mac(host)
    assert link_mac(block.bridge) == block.mac(1), "adding Pods left the bridge's MAC alone"

    apps.patch_namespaced_deployment_scale("web", namespace, {"spec": {"replicas": 0}})
    wait_until(lambda: not core.list_namespaced_pod(namespace).items, timeout=30, what="no pods")
    assert link_mac(block.bridge) == block.mac(1), "removing Pods left the bridge's MAC alone"
