"""The node's images: what `make images` (buildah) put in the machine's containers-storage.

The agent pulls from no registry: local storage is all there is, as on a kind node after `kind load`.
An image is read with `podman image inspect` (its config and the overlay folders of its layers); the
container runtime (`runc.py`) stacks those folders under a writable layer of the container's own.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PODMAN = "podman"


@dataclass(frozen=True)
class Image:
    """One image in local storage, as the runtime needs it."""

    reference: str
    """The name it was asked for, as found (e.g. `localhost/jobqueue-worker:dev`)."""
    id: str
    layers: tuple[str, ...]
    """Overlay folders of its layers, topmost first (overlayfs `lowerdir` order)."""
    entrypoint: tuple[str, ...] = ()
    cmd: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    working_dir: str = ""
    user: str = ""

    @classmethod
    def from_inspect(cls, name: str, found: dict[str, Any]) -> Image:
        config = found.get("Config") or {}
        data = (found.get("GraphDriver") or {}).get("Data") or {}
        layers = [data["UpperDir"]] if data.get("UpperDir") else []
        layers += [p for p in str(data.get("LowerDir") or "").split(":") if p]
        tags = found.get("RepoTags") or [name]
        return cls(
            reference=next((t for t in tags if t.endswith(name) or t == name), tags[0]),
            id=str(found["Id"]),
            layers=tuple(layers),
            entrypoint=tuple(config.get("Entrypoint") or ()),
            cmd=tuple(config.get("Cmd") or ()),
            env=tuple(config.get("Env") or ()),
            working_dir=str(config.get("WorkingDir") or ""),
            user=str(config.get("User") or ""),
        )

    def read_file(self, path: str) -> str | None:
        """A file of the image's root filesystem (the topmost layer that has it), e.g. /etc/passwd."""
        for layer in self.layers:
            candidate = Path(layer) / path.lstrip("/")
            if candidate.is_file():
                return candidate.read_text(errors="replace")
        return None


class ImageStore:
    """Looks images up in local storage."""

    def lookup(self, name: str) -> Image | None:
        """The image `name` (short names resolve to localhost/ as with podman), or None if absent."""
        done = subprocess.run([PODMAN, "image", "inspect", name], capture_output=True, text=True, check=False)
        if done.returncode != 0:
            return None
        found = json.loads(done.stdout)
        if not found or (found[0].get("GraphDriver") or {}).get("Name") != "overlay":
            return None
        return Image.from_inspect(name, found[0])
