"""Which containers run as host processes: only those of one reserved image, for tests (pure).

The agent pulls from no registry, so a container runs from its image when the image is in local storage
(`make images`, which also builds the stand-ins of `redis:7.4` and `mher/flower:2.0`, the images the
operator puts in every JobQueue by default), and otherwise fails to start as on any node:
`ErrImageNeverPull`, or `ErrImagePull` and `ImagePullBackOff` in turn. A typo in a JobQueue's `image`
must show that, not run something else. The one exception is a reserved reference for tests that want a
host process on purpose (a worker of the repository's code, without an image build): a container of it
runs its `command` as a process of the host, and the Pod says so in its status (`HostProcess` condition).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Final

HOST_PROCESS_IMAGE: Final = "devenv.invalid/host-process:latest"
"""The reserved image of tests that want a host process on purpose (`.invalid`: no registry has it)."""

CONDITION: Final = "jobqueue.dev/HostProcess"
"""The Pod condition (True) of a Pod with a container run as a host process; `kubectl describe pod` lists it."""


def runs_on_host(image: str) -> bool:
    """Does a container of `image`, not in local storage, run as a host process (else: an image error)?"""
    return image == HOST_PROCESS_IMAGE


def condition(containers: Sequence[tuple[str, str, str]], since: str) -> dict[str, Any]:
    """The Pod's `HostProcess` condition for its (container, image, executable) run as host processes."""
    said = "; ".join(
        f"container {name} runs as a host process ({executable}) in place of image {image}"
        for name, image, executable in containers
    )
    return {
        "type": CONDITION,
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": since,
        "reason": "NoImageOnLocalCluster",
        "message": f"{said}, the image reserved for host processes (docs/local-cluster.md)",
    }
