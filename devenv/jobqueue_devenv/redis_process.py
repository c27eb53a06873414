"""A real redis-server as a process on the host, for tests and benchmarks: on 127.0.0.1, no RDB snapshots,
in a directory of its own (its log goes there too), in its own session so that stopping it ends it all.

By default it asks for a random password; `password=None` runs it without one.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.waiting import wait_until

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"


@dataclass
class RedisServer:
    """One redis-server on 127.0.0.1, no snapshots, in its own directory (password-protected by default)."""

    directory: Path
    port: int = field(default_factory=lambda: free_port(host=""))
    password: str | None = field(default_factory=lambda: uuid.uuid4().hex)
    proc: subprocess.Popen[bytes] | None = None
    appendonly: bool = False
    """Persistence (AOF) in `directory`, so that a restart keeps the data."""
    databases: int | None = None
    """How many numbered databases (redis-server's default, 16, when None)."""
    extra_args: tuple[str, ...] = ()
    """More command-line options, e.g. `("--replicaof", "127.0.0.1", "6380")` (`sentinel_process.SentinelGroup`)."""

    @property
    def url(self) -> str:
        """The URL of database 0."""
        return self.url_for(0)

    def url_for(self, db: int) -> str:
        auth = f":{self.password}@" if self.password is not None else ""
        return f"redis://{auth}127.0.0.1:{self.port}/{db}"

    def client(self) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, password=self.password, socket_timeout=5)

    def start(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        args = [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port)]
        if self.password is not None:
            args += ["--requirepass", self.password]
        args += ["--dir", str(self.directory), "--save", "", "--daemonize", "no"]
        args += ["--appendonly", "yes" if self.appendonly else "no"]
        if self.databases is not None:
            args += ["--databases", str(self.databases)]
        args += self.extra_args
        with (self.directory / "redis.log").open("ab") as log:
            self.proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_until(lambda: self.client().ping(), timeout=10, what=f"redis-server on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            stop_group(self.proc)
            self.proc = None

    @classmethod
    @contextlib.contextmanager
    def running(cls, directory: Path, **options: Any) -> Iterator[RedisServer]:
        """A started server (`options`: the other fields, e.g. password=None), stopped when the block ends."""
        server = cls(directory, **options)
        server.start()
        try:
            yield server
        finally:
            server.stop()
