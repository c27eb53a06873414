"""`make cluster-down` ends every process and container the node agent started, even when the agent was
killed first.

This test starts a cluster of its own (next to the session's), because it kills that cluster's agent.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kubernetes import client, config

from jobqueue_devenv import binaries, cluster, images
from jobqueue_devenv.nodeagent import cleanup, layout, network, runc
from jobqueue_devenv.waiting import wait_until
from tests.integration.devenv.test_node_agent import one_shot_pod, program


def test_down_ends_pod_processes_and_the_pod_network_after_the_agent_was_killed(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    state, _ = cluster.up(directory, binaries.find())
    try:
        core = client.CoreV1Api(config.new_client_from_config(config_file=state.kubeconfig))
        wait_until(lambda: core.read_namespaced_service_account("default", "default"), timeout=30, what="default SA")
        core.create_namespaced_pod("default", one_shot_pod("sleeper", program("sleep"), "default"))
        # redis-server overwrites its environment with its process title: found by its network namespace.
        core.create_namespaced_pod("default", one_shot_pod("redis", ["redis-server", "--save", ""], "default"))
        # From an image: `runc run` and the container's PID 1 (a `sleep`, which ignores SIGTERM as PID 1).
        contained = one_shot_pod("contained", ["sleep", "600"], "default")
        contained["spec"]["containers"][0]["image"] = images.WORKER.reference
        core.create_namespaced_pod("default", contained)
        for name in ("sleeper", "redis", "contained"):
            wait_until(
                lambda n=name: core.read_namespaced_pod(n, "default").status.phase == "Running",
                timeout=30,
                what=f"{name} running",
            )
        folder = cleanup.agent_folder(directory)
        place = layout.NodeLayout.load(folder)
        block = network.Block.load(directory)
        assert block is not None
        assert place is not None
        wait_until(lambda: len(cleanup.pod_processes(folder)) == 4, timeout=10, what="4 processes (runc's too)")
        pods = cleanup.pod_processes(folder)
        assert (
            runc.state_root(folder) / f"{core.read_namespaced_pod('contained', 'default').metadata.uid}-main-0"
        ).is_dir()
        assert any(name.startswith(f"jq{block.index}p") for name in network.existing_netns())

        agent = next(p for p in state.processes if p.name == "node-agent")
        os.kill(agent.pid, signal.SIGKILL)
        wait_until(lambda: not cluster.processes.is_running(agent), timeout=10, what="agent gone")
        assert cleanup.pod_processes(folder) == pods, "Pod processes outlive their agent"
    finally:
        cluster.down(directory)

    assert cleanup.pod_processes(folder) == []
    # Volumes (every Pod has its ServiceAccount token) were mounted only inside the Pods' namespaces.
    assert str(directory) not in Path("/proc/self/mountinfo").read_text()
    assert not directory.exists()
    assert not any(name.startswith(f"jq{block.index}p") for name in network.existing_netns())
    assert network.bridge_owner(block.bridge) != str(directory.resolve())
    assert not (runc.CGROUP_ROOT / "memory" / place.cgroup_parent).exists()  # runc's cgroups gone
    assert not (runc.unified_root() / place.cgroup_parent).exists()  # the node's own cgroup too
