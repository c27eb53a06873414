"""Helpers of the operator's unit tests: the CRD, the samples and golden files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from jobqueue_devenv.paths import CRD_FILE, REPO

SAMPLES = REPO / "manifests" / "samples"
GOLDEN = Path(__file__).parent / "golden"

Golden = Callable[[str, Any], None]


@pytest.fixture
def golden() -> Golden:
    """Compare an object with golden/<name>.yaml; JOBQUEUE_UPDATE_GOLDEN=1 rewrites the file instead."""

    def check(name: str, actual: Any) -> None:
        path = GOLDEN / f"{name}.yaml"
        rendered = yaml.safe_dump(actual, sort_keys=False, default_flow_style=False)
        if os.environ.get("JOBQUEUE_UPDATE_GOLDEN") == "1":
            path.write_text(rendered)
        assert path.exists(), f"{path} is missing: run with JOBQUEUE_UPDATE_GOLDEN=1 and review it"
        assert rendered == path.read_text(), f"{path} differs; JOBQUEUE_UPDATE_GOLDEN=1 rewrites it"

    return check


def crd() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(CRD_FILE.read_text())
    return document


def schema() -> dict[str, Any]:
    version: dict[str, Any] = crd()["spec"]["versions"][0]
    return dict(version["schema"]["openAPIV3Schema"])


def samples() -> list[Path]:
    return sorted(SAMPLES.glob("*.yaml"))
