"""List, then watch, one kind of object into a cache, calling back on every change (a tiny informer)."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch

log = logging.getLogger("node-agent.informer")

WATCH_SECONDS = 60
Handler = Callable[[str, dict[str, Any]], None]
"""(event type ADDED/MODIFIED/DELETED, object as plain JSON) -> None"""


class _Expired(Exception):
    """The watch's resource version is too old: list again."""


class Informer(threading.Thread):
    def __init__(
        self, name: str, list_call: Callable[..., Any], handle: Handler, stopping: threading.Event, **kwargs: Any
    ) -> None:
        super().__init__(name=f"informer-{name}", daemon=True)
        self.list_call, self.handle, self.stopping, self.kwargs = list_call, handle, stopping, kwargs
        self.cache: dict[str, dict[str, Any]] = {}
        self.synced = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                version = self._relist()
                self.synced.set()
                while not self.stopping.is_set():
                    version = self._watch(version)
            except _Expired:
                continue
            except Exception:
                log.exception("%s: list/watch failed; retrying", self.name)
                self.stopping.wait(1)

    def _emit(self, kind: str, obj: dict[str, Any]) -> None:
        try:
            self.handle(kind, obj)
        except Exception:
            log.exception("%s: handler failed for %s", self.name, obj.get("metadata", {}).get("name"))

    def _relist(self) -> str:
        response = self.list_call(_preload_content=False, **self.kwargs)
        listing = json.loads(response.data)
        items = {item["metadata"]["uid"]: item for item in listing["items"]}
        for uid in list(self.cache):
            if uid not in items:
                self._emit("DELETED", self.cache.pop(uid))
        for uid, item in items.items():
            self.cache[uid] = item
            self._emit("MODIFIED", item)
        return str(listing["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> str:
        stream = watch.Watch().stream(
            self.list_call,
            resource_version=version,
            timeout_seconds=WATCH_SECONDS,
            allow_watch_bookmarks=True,
            **self.kwargs,
        )
        for event in stream:
            obj = event["raw_object"]
            if event["type"] == "ERROR":
                raise _Expired()
            version = obj["metadata"]["resourceVersion"]
            if event["type"] == "BOOKMARK":
                continue
            uid = obj["metadata"]["uid"]
            if event["type"] == "DELETED":
                self.cache.pop(uid, None)
            else:
                self.cache[uid] = obj
            self._emit(event["type"], obj)
            if self.stopping.is_set():
                break
        return version
