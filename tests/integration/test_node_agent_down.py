"""`make cluster-down` ends every process the node agent started, even when the agent was killed first.

This test starts a cluster of its own (next to the session's), because it kills that cluster's agent.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

from kubernetes import client, config

from jobqueue_devenv import binaries, cluster
from jobqueue_devenv.nodeagent import cleanup, network
from jobqueue_devenv.waiting import wait_until
from tests.integration.test_node_agent import one_shot_pod, program


def test_down_ends_pod_processes_and_the_pod_network_after_the_agent_was_killed(tmp_path: Path) -> None:
    directory = tmp_path / "c"
    state, _ = cluster.up(directory, binaries.find())
    try:
        core = client.CoreV1Api(config.new_client_from_config(config_file=state.kubeconfig))
        wait_until(lambda: core.read_namespaced_service_account("default", "default"), timeout=30, what="default SA")
        core.create_namespaced_pod("default", one_shot_pod("sleeper", program("sleep"), "default"))
        # redis-server overwrites its environment with its process title: found by its network namespace.
        core.create_namespaced_pod("default", one_shot_pod("redis", ["redis-server", "--save", ""], "default"))
        for name in ("sleeper", "redis"):
            wait_until(
                lambda n=name: core.read_namespaced_pod(n, "default").status.phase == "Running",
                timeout=30,
                what=f"{name} running",
            )
        folder = cleanup.agent_folder(directory)
        block = network.Block.load(folder)
        assert block is not None
        pods = cleanup.pod_processes(folder)
        assert len(pods) == 2
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
    assert network.bridge_owner(block.bridge) != str(folder.resolve())
