"""The fault suite's own operator and ledger: one scenario kills the operator, so it must not be the
session's (`tests/e2e/conftest.py`), and it watches its own namespace prefix so the two never overlap."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from jobqueue_devenv import demo
from jobqueue_devenv.faults.stage import ledger_broker
from tests.e2e.conftest import SESSION

PREFIX = f"e2f-{SESSION}"


@pytest.fixture(scope="module")
def fault_operator(kube: demo.Kube, tmp_path_factory: pytest.TempPathFactory) -> Iterator[demo.RunningOperator]:
    log = tmp_path_factory.mktemp("fault-operator") / "operator.log"
    with demo.operator(kube, [f"{PREFIX}-*"], log, f"jqfaults-{SESSION}", f"jqfaults-{SESSION}") as running:
        yield running


@pytest.fixture(scope="module")
def ledger_url(kube: demo.Kube, fault_operator: demo.RunningOperator) -> Iterator[str]:
    with ledger_broker(kube, PREFIX) as url:
        yield url
