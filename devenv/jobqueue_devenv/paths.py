"""Where the repository's chart and CRD are, and where the local environment keeps built binaries and
running clusters."""

import os
import tempfile
from pathlib import Path
from typing import Final

REPO: Final = Path(__file__).resolve().parents[2]
CHART: Final = REPO / "charts" / "jobqueue-operator"
CRD_NAME: Final = "jobqueues.jobqueue.dev"
"""The JobQueue CRD's name in the API (`kubectl wait crd/<name>`)."""
CRD_FILE: Final = CHART / "crds" / f"{CRD_NAME}.yaml"
"""The JobQueue CRD: its one source file, in the chart."""


def cache_dir() -> Path:
    """Built binaries and Go wrapper modules; kept across runs and clones, keyed by version."""
    if explicit := os.environ.get("JQ_CACHE_DIR"):
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jobqueue-operator"


def default_cluster_dir() -> Path:
    """State of the cluster `make cluster-up` runs: data, certificates, logs, kubeconfig."""
    if explicit := os.environ.get("JQ_CLUSTER_DIR"):
        return Path(explicit)
    return Path(tempfile.gettempdir()) / f"jobqueue-cluster-{os.getuid()}"
