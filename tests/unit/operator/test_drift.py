"""When the reconciler may skip applying a child: it holds the same manifest, untouched."""

from __future__ import annotations

import copy
from typing import Any

from jobqueue_operator import naming
from jobqueue_operator.build import drift, workers
from tests.unit.operator.test_builders import _sample


def _desired() -> dict[str, Any]:
    jq = _sample("media")
    return drift.stamped(workers.deployment(jq, jq.spec.queues[0]))


def _as_served(manifest: dict[str, Any]) -> dict[str, Any]:
    """`manifest` as the API server returns it: defaults, bookkeeping and status added."""
    live = copy.deepcopy(manifest)
    live["metadata"].update(resourceVersion="42", uid="child-uid", generation=1, managedFields=[{"manager": "x"}])
    live["spec"].update(revisionHistoryLimit=10, progressDeadlineSeconds=600)
    pod = live["spec"]["template"]["spec"]
    pod.update(restartPolicy="Always", dnsPolicy="ClusterFirst", schedulerName="default-scheduler")
    container = pod["containers"][0]
    container.setdefault("terminationMessagePath", "/dev/termination-log")
    container.setdefault("terminationMessagePolicy", "File")
    container["livenessProbe"]["successThreshold"] = 1
    live["status"] = {"replicas": 0, "observedGeneration": 1}
    return live


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = manifest["spec"]["template"]["spec"]["containers"][0]
    return container


def test_the_stamp_is_the_hash_of_the_manifest_and_follows_every_change() -> None:
    jq = _sample("media")
    plain = workers.deployment(jq, jq.spec.queues[0])
    stamp = drift.stamped(plain)["metadata"]["annotations"][naming.APPLIED_HASH_ANNOTATION]
    assert stamp == drift.manifest_hash(plain)
    assert naming.APPLIED_HASH_ANNOTATION not in plain["metadata"].get("annotations", {})
    fewer = copy.deepcopy(plain)
    _container(fewer)["env"].pop()
    assert drift.stamped(fewer)["metadata"]["annotations"][naming.APPLIED_HASH_ANNOTATION] != stamp


def test_a_child_as_served_with_the_same_stamp_needs_no_apply() -> None:
    desired = _desired()
    assert drift.up_to_date(desired, _as_served(desired))


def test_a_child_that_does_not_exist_is_applied() -> None:
    assert not drift.up_to_date(_desired(), None)


def test_a_child_stamped_for_another_manifest_is_applied() -> None:
    desired = _desired()
    live = _as_served(desired)
    live["metadata"]["annotations"][naming.APPLIED_HASH_ANNOTATION] = "0123456789abcdef"
    assert not drift.up_to_date(desired, live)
    del live["metadata"]["annotations"]
    assert not drift.up_to_date(desired, live)


def test_a_child_someone_edited_is_applied_again() -> None:
    desired = _desired()
    edited = _as_served(desired)
    _container(edited)["image"] = "someone/else:1"
    assert not drift.up_to_date(desired, edited)
    shorter = _as_served(desired)
    _container(shorter)["env"].pop(0)
    assert not drift.up_to_date(desired, shorter)
    no_probe = _as_served(desired)
    del _container(no_probe)["readinessProbe"]
    assert not drift.up_to_date(desired, no_probe)


def test_empty_values_the_api_server_leaves_out_count_as_held() -> None:
    assert drift.holds({"a": 1}, {"a": 1, "b": {}, "c": [], "d": ""})
    assert not drift.holds({"a": 1}, {"a": 1, "b": {"x": 1}})
    assert not drift.holds({"a": [1, 2]}, {"a": [1]})
    assert not drift.holds({"a": "1"}, {"a": 1})
