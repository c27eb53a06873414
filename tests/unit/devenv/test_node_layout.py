"""The nodes of a local cluster: names, folders, Pod address ranges and cgroups (pure), and the cluster state's
view of which processes must run."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from jobqueue_devenv import cluster
from jobqueue_devenv.errors import DevenvError
from jobqueue_devenv.nodeagent import layout, network
from jobqueue_devenv.processes import ProcessRecord


def test_nodes_are_named_after_the_first_one() -> None:
    assert layout.node_names(1) == ["jobqueue-local"]
    assert layout.node_names(3) == ["jobqueue-local", "jobqueue-local-2", "jobqueue-local-3"]
    assert [layout.node_index(n) for n in layout.node_names(4)] == [0, 1, 2, 3]
    assert [layout.folder_name(n) for n in layout.node_names(3)] == ["node-agent", "node-agent-2", "node-agent-3"]


@pytest.mark.parametrize("count", [0, layout.MAX_NODES + 1])
def test_a_node_count_out_of_range_is_refused(count: int) -> None:
    with pytest.raises(layout.LayoutError, match=f"1 to {layout.MAX_NODES} nodes"):
        layout.node_names(count)


@pytest.mark.parametrize("name", ["jobqueue-local-1", "jobqueue-local-5", "jobqueue-local-02", "worker", ""])
def test_a_name_that_is_no_node_is_refused(name: str) -> None:
    with pytest.raises(layout.LayoutError, match="no node"):
        layout.node_index(name)


def test_one_node_keeps_every_pod_address_it_always_had() -> None:
    (only,) = layout.layouts(block=7, count=1)
    assert only.pod_cidr == "10.213.7.0/25"
    assert only.hosts == range(2, 128)
    assert only.max_pods == layout.MAX_PODS


@pytest.mark.parametrize("count", [1, 2, 3, 4])
def test_nodes_get_disjoint_aligned_pod_ranges_below_the_service_cidr(count: int) -> None:
    places = layout.layouts(block=5, count=count)
    services = ipaddress.ip_network(network.Block(5).service_cidr)
    seen: set[int] = set()
    for place in places:
        cidr = ipaddress.ip_network(place.pod_cidr)  # strict: a misaligned range raises here
        addresses = {ipaddress.ip_address(network.Block(5).address(h)) for h in place.hosts}
        assert all(a in cidr for a in addresses)
        assert not cidr.overlaps(services)
        assert not seen & set(place.hosts)
        assert 0 not in place.hosts
        assert 1 not in place.hosts, "the bridge's address"
        seen |= set(place.hosts)
        assert place.max_pods == min(layout.MAX_PODS, len(place.hosts))
    assert len({p.cgroup_parent for p in places}) == count


def test_a_node_owns_only_the_network_namespaces_of_its_addresses() -> None:
    first, second, _ = layout.layouts(block=3, count=3)
    assert second.pod_cidr == "10.213.3.32/27"
    assert second.owns_netns(network.Block(3).netns(40))
    assert not first.owns_netns(network.Block(3).netns(40))
    assert not second.owns_netns(network.Block(4).netns(40)), "another cluster's"
    assert not second.owns_netns("jq3pod")


def test_the_layout_record_survives_a_save_and_load(tmp_path: Path) -> None:
    place = layout.NodeLayout("jobqueue-local-2", 9, 3)
    place.save(tmp_path / "node-agent-2")
    layout.NodeLayout("jobqueue-local", 9, 3).save(tmp_path / "node-agent")
    (tmp_path / "node-agent-3").mkdir()  # no record: not a node folder
    assert layout.NodeLayout.load(tmp_path / "node-agent-2") == place
    assert layout.NodeLayout.load(tmp_path / "elsewhere") is None
    assert [p.name for p in layout.node_folders(tmp_path)] == ["node-agent", "node-agent-2"]


def test_the_node_count_comes_from_the_argument_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cluster.NODES_VARIABLE, raising=False)
    assert cluster.node_count() == 1
    monkeypatch.setenv(cluster.NODES_VARIABLE, "3")
    assert cluster.node_count() == 3
    assert cluster.node_count(2) == 2
    monkeypatch.setenv(cluster.NODES_VARIABLE, "three")
    with pytest.raises(DevenvError, match="'three' is not a node count"):
        cluster.node_count()
    with pytest.raises(DevenvError, match="9 is not a node count"):
        cluster.node_count(9)


def test_a_powered_off_node_s_agent_is_not_expected_to_run(tmp_path: Path) -> None:
    state = cluster.ClusterState(
        directory=str(tmp_path),
        kubeconfig=str(tmp_path / "kubeconfig"),
        ports={},
        processes=[
            ProcessRecord("etcd", 1, "etcd"),
            ProcessRecord("node-agent", 2, "python"),
            ProcessRecord("node-agent-2", 3, "python"),
        ],
        node_names=layout.node_names(2),
    )
    assert [p.name for p in state.expected()] == ["etcd", "node-agent", "node-agent-2"]
    state.stopped_nodes.append("jobqueue-local-2")
    assert [p.name for p in state.expected()] == ["etcd", "node-agent"]
    assert state.agent("jobqueue-local-2") == ProcessRecord("node-agent-2", 3, "python")
