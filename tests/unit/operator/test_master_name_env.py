"""Every container that reads the broker URL also gets the Sentinel master name from the same Secret (key
`masterName`, optional): one place names the master for workers, beat and Flower (docs/broker.md, "An
external Sentinel group")."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from jobqueue_operator import naming
from jobqueue_operator.build import children
from jobqueue_worker.contract import Env
from tests.unit.operator.conftest import samples
from tests.unit.operator.test_builders import _sample


def _containers(manifests: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for manifest in manifests:
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            yield from manifest["spec"]["template"]["spec"]["containers"]


@pytest.mark.parametrize("stem", [p.stem for p in samples()])
def test_a_container_with_the_broker_url_gets_the_master_name_from_the_same_secret(stem: str) -> None:
    readers = 0
    for container in _containers(children.desired(_sample(stem))):
        env = {var["name"]: var for var in container.get("env", [])}
        if Env.BROKER_URL not in env:
            continue
        readers += 1
        url_ref = env[Env.BROKER_URL]["valueFrom"]["secretKeyRef"]
        name_ref = env[Env.BROKER_MASTER_NAME]["valueFrom"]["secretKeyRef"]
        assert name_ref == {"name": url_ref["name"], "key": naming.MASTER_NAME_KEY, "optional": True}, container["name"]
    assert readers >= 1


def test_beat_and_flower_read_the_broker_url_and_the_master_name() -> None:
    names = {c["name"] for c in _containers(children.desired(_sample("scheduled"))) if "env" in c}
    with_both = {
        c["name"]
        for c in _containers(children.desired(_sample("scheduled")))
        if {Env.BROKER_URL, Env.BROKER_MASTER_NAME} <= {v["name"] for v in c.get("env", [])}
    }
    assert {"beat", "flower"} <= with_both <= names
