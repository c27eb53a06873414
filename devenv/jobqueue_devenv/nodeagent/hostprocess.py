"""Which containers run as host processes: only those of images the local cluster truly cannot get (pure).

The agent pulls from no registry, so a container runs from its image when the image is in local storage
(`make images`), and otherwise fails to start as on any node: `ErrImageNeverPull`, or `ErrImagePull` and
`ImagePullBackOff` in turn. A typo in a JobQueue's `image` must show that, not run something else.
The exceptions are listed here, each for a reason: the images the operator puts in every JobQueue by
default, which no build here makes (their programs are on the host instead), and one reserved reference
for tests that want a host process on purpose. A container of these images runs its `command` as a
process of the host, and the Pod says so in its status (`HostProcess` condition, below).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final

from jobqueue_operator.models import Flower, ManagedBroker

HOST_PROCESS_IMAGE: Final = "devenv.invalid/host-process:latest"
"""The reserved image of tests that want a host process on purpose (`.invalid`: no registry has it)."""

HOST_PROCESS_IMAGES: Final[Mapping[str, str]] = {
    str(ManagedBroker.model_fields["image"].default): "the managed Redis's default image (Debian's redis-server)",
    str(Flower.model_fields["image"].default): "Flower's default image (`celery flower` from the virtualenv)",
    HOST_PROCESS_IMAGE: "reserved for a host process on purpose",
}
"""Image reference, exactly as a Pod names it -> why it runs as a host process."""

CONDITION: Final = "jobqueue.dev/HostProcess"
"""The Pod condition (True) of a Pod with a container run as a host process; `kubectl describe pod` lists it."""


def runs_on_host(image: str) -> bool:
    """Does a container of `image`, not in local storage, run as a host process (else: an image error)?"""
    return image in HOST_PROCESS_IMAGES


def condition(containers: Sequence[tuple[str, str, str]], since: str) -> dict[str, Any]:
    """The Pod's `HostProcess` condition for its (container, image, executable) run as host processes."""
    said = "; ".join(
        f"container {name} runs as a host process ({executable}) in place of image {image}: "
        f"{HOST_PROCESS_IMAGES.get(image, 'no such image here')}"
        for name, image, executable in containers
    )
    return {
        "type": CONDITION,
        "status": "True",
        "lastProbeTime": None,
        "lastTransitionTime": since,
        "reason": "NoImageOnLocalCluster",
        "message": f"{said} (docs/local-cluster.md)",
    }
