"""The node faults' choices: which node to fault, who leads, what a PodDisruptionBudget allows."""

from __future__ import annotations

from typing import Any

from jobqueue_devenv.faults.placement import by_node, disruptions_allowed, leader, victim


def pod(name: str, node: str = "") -> dict[str, Any]:
    return {"metadata": {"name": name}, "spec": {"nodeName": node} if node else {}}


def test_pods_are_grouped_by_node_and_unscheduled_ones_left_out() -> None:
    pods = [pod("a", "n1"), pod("b", "n2"), pod("c", "n2"), pod("d")]
    assert by_node(pods) == {"n1": {"a"}, "n2": {"b", "c"}}


def test_the_victim_has_enough_busy_pods_and_is_never_the_spare_node() -> None:
    layout = {"spare": {"a", "b", "c"}, "n2": {"d", "e"}, "n3": {"f"}}
    busy = {"a", "b", "c", "d", "e", "f"}
    assert victim(layout, busy, spare={"spare"}, least=2) == "n2"
    assert victim(layout, {"a", "b", "d", "f"}, spare={"spare"}, least=2) is None  # n2 has one busy Pod only
    assert victim(layout, busy, spare={"spare", "n2"}, least=2) is None


def test_the_victim_avoids_the_leaders_node_when_another_fits_and_not_otherwise() -> None:
    layout = {"n1": {"a"}, "n2": {"b", "c"}, "n3": {"d", "e"}}
    busy = {"b", "c", "d", "e"}
    assert victim(layout, busy, spare={"n1"}, avoid={"n2"}, least=2) == "n3"
    assert victim(layout, busy, spare={"n1"}, avoid={"n2", "n3"}, least=2) == "n2"


def test_the_victim_is_the_node_with_most_busy_pods_then_by_name() -> None:
    layout = {"n2": {"a"}, "n3": {"b", "c"}, "n4": {"d"}}
    assert victim(layout, {"a", "b", "c", "d"}, spare=()) == "n3"
    assert victim(layout, {"a", "d"}, spare=()) == "n2"


def test_the_leader_is_the_operator_pod_a_lease_names() -> None:
    leases: list[dict[str, Any]] = [
        {"spec": {"holderIdentity": "other-controller"}},
        {"spec": {"holderIdentity": "op-2"}},
        {"spec": {}},
    ]
    assert leader(leases, {"op-1", "op-2"}) == "op-2"
    assert leader(leases, {"op-1"}) is None


def test_a_budget_allows_max_unavailable_or_what_min_available_leaves() -> None:
    assert disruptions_allowed({"maxUnavailable": 1}, 6) == 1
    assert disruptions_allowed({"minAvailable": 1}, 6) == 5
    assert disruptions_allowed({"minAvailable": "50%"}, 5) == 2  # 2.5 rounded up to 3 must stay
    assert disruptions_allowed({"maxUnavailable": "25%"}, 6) == 2  # 1.5 rounded up
    assert disruptions_allowed({"minAvailable": 8}, 6) == 0
    assert disruptions_allowed({}, 3) == 3


def test_a_whole_node_busy_means_no_pod_there_has_a_free_slot() -> None:
    layout = {"n2": {"a", "b", "c"}, "n3": {"d", "e"}}
    busy = {"a", "b", "d", "e"}
    assert victim(layout, busy, spare=(), least=2) == "n2"
    assert victim(layout, busy, spare=(), least=2, whole=True) == "n3"
    assert victim(layout, {"a", "b", "d"}, spare=(), least=2, whole=True) is None
