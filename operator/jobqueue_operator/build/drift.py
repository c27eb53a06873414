"""PURE: does a live child already hold what the operator would apply? Then the apply can be skipped.

A server-side apply that changes nothing still costs the API server a whole write path, and every resync
pass applies every child of every JobQueue. A child is up to date when it carries the hash of exactly the
manifest the operator would apply now (so a field dropped from the manifest is noticed: the hash differs)
and every field of that manifest still has its value in the live object (so an edit by someone else is
noticed and undone). Anything else, including a value the API server writes back in another form, just
means the child is applied as before.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from jobqueue_operator import naming
from jobqueue_operator.build.common import Manifest

EMPTY: tuple[Any, ...] = ({}, [], "", None)
"""Values the API server leaves out of an object instead of storing them."""


def manifest_hash(manifest: Manifest) -> str:
    return hashlib.sha256(json.dumps(manifest, sort_keys=True).encode()).hexdigest()[:16]


def stamped(manifest: Manifest) -> Manifest:
    """`manifest` with the hash of itself in an annotation."""
    metadata = manifest["metadata"]
    annotations = {**metadata.get("annotations", {}), naming.APPLIED_HASH_ANNOTATION: manifest_hash(manifest)}
    return {**manifest, "metadata": {**metadata, "annotations": annotations}}


def holds(live: Any, desired: Any) -> bool:
    """Every field of `desired` has its value in `live` (maps may have more keys; lists match item by item)."""
    if isinstance(desired, dict):
        if not isinstance(live, dict):
            return False
        return all(holds(live[key], value) if key in live else value in EMPTY for key, value in desired.items())
    if isinstance(desired, list):
        if not isinstance(live, list) or len(live) != len(desired):
            return False
        return all(holds(have, want) for have, want in zip(live, desired, strict=True))
    return bool(live == desired)


def up_to_date(desired: Manifest, live: Manifest | None) -> bool:
    """`desired` (stamped) needs no apply over `live` (None: it does not exist)."""
    if live is None:
        return False
    want = desired["metadata"]["annotations"][naming.APPLIED_HASH_ANNOTATION]
    have = (live.get("metadata", {}).get("annotations") or {}).get(naming.APPLIED_HASH_ANNOTATION)
    return have == want and holds(live, desired)
