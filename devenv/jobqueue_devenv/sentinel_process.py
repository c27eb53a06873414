"""A real Redis Sentinel group as processes on the host, for tests and benchmarks of failover.

Three redis-server processes (one master, two replicas) and three Sentinels (`redis-server --sentinel`)
watching them, on free ports of 127.0.0.1, with the managed broker's settings (docs/broker.md): AOF fsynced
every second, `noeviction`, `min-replicas-to-write 1` within `min-replicas-max-lag 10`, quorum 2, one
password for Redis and Sentinel. Failover is Sentinel's own: this module only starts, kills, freezes and asks.

    with SentinelGroup.running(tmp_path) as group:
        url = group.sentinel_url()        # for JOBQUEUE_BROKER_URL (master name: contract.SENTINEL_MASTER_NAME)
        old = group.kill_master()         # SIGKILL; or freeze_master() (SIGSTOP: connections stay open)
        group.wait_for_new_master(old)    # Sentinel promoted a replica
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis
import redis.sentinel

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.redis_process import REDIS_SERVER, RedisServer
from jobqueue_devenv.waiting import wait_until
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

Address = tuple[str, int]
HOST = "127.0.0.1"


@dataclass
class SentinelGroup:
    """One master, `replicas` replicas and `sentinels` Sentinels, all with the same password."""

    directory: Path
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    master_name: str = SENTINEL_MASTER_NAME
    replicas: int = 2
    sentinels: int = 3
    quorum: int = 2
    down_after_ms: int = 5000
    failover_timeout_ms: int = 10000
    min_replicas_to_write: int = 1
    min_replicas_max_lag: int = 10
    servers: dict[int, RedisServer] = field(default_factory=dict)
    """The Redis members by port (the first one started as the master)."""
    sentinel_procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    frozen: set[int] = field(default_factory=set)

    # -- starting and stopping

    def start(self) -> None:
        """Start the members, then the Sentinels; return once every Sentinel sees all members and its peers."""
        self.directory.mkdir(parents=True, exist_ok=True)
        try:
            master = self._start_server(None)
            for _ in range(self.replicas):
                self._start_server(master.port)
            wait_until(
                lambda: self._online_replicas(master.port) == self.replicas,
                timeout=30,
                what=f"{self.replicas} replicas in sync with the master on port {master.port}",
            )
            for _ in range(self.sentinels):
                self._start_sentinel(master.port)
            self.wait_healthy()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop every process (a frozen one is woken first, so that it can be ended)."""
        for port in list(self.frozen):
            self.thaw(port)
        for proc in self.sentinel_procs.values():
            stop_group(proc)
        self.sentinel_procs.clear()
        for server in self.servers.values():
            server.stop()

    @classmethod
    @contextlib.contextmanager
    def running(cls, directory: Path, **options: Any) -> Iterator[SentinelGroup]:
        """A started group (`options`: the other fields, e.g. down_after_ms=2000), stopped when the block ends."""
        group = cls(directory, **options)
        group.start()
        try:
            yield group
        finally:
            group.stop()

    def _member_args(self) -> tuple[str, ...]:
        return (
            "--masterauth", self.password,
            "--appendfsync", "everysec",
            "--maxmemory-policy", "noeviction",
            "--min-replicas-to-write", str(self.min_replicas_to_write),
            "--min-replicas-max-lag", str(self.min_replicas_max_lag),
        )  # fmt: skip

    def _start_server(self, master_port: int | None) -> RedisServer:
        port = free_port()
        replicaof = ("--replicaof", HOST, str(master_port)) if master_port is not None else ()
        server = RedisServer(
            self.directory / f"redis-{port}",
            port=port,
            password=self.password,
            appendonly=True,
            extra_args=(*self._member_args(), *replicaof),
        )
        self.servers[port] = server
        server.start()
        return server

    def _start_sentinel(self, master_port: int) -> None:
        port = free_port()
        directory = self.directory / f"sentinel-{port}"
        directory.mkdir(parents=True, exist_ok=True)
        name = self.master_name
        config = directory / "sentinel.conf"  # Sentinel rewrites its file with what it learns: one each
        config.write_text(
            f"port {port}\nbind {HOST}\ndaemonize no\ndir {directory}\nrequirepass {self.password}\n"
            f"sentinel monitor {name} {HOST} {master_port} {self.quorum}\n"
            f"sentinel auth-pass {name} {self.password}\n"
            f"sentinel sentinel-pass {self.password}\n"  # the peers ask each other, with requirepass on
            f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
            f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
            f"sentinel parallel-syncs {name} 1\n"
        )
        with (directory / "sentinel.log").open("ab") as log:
            proc = subprocess.Popen(
                [REDIS_SERVER, str(config), "--sentinel"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.sentinel_procs[port] = proc
        wait_until(lambda: self._sentinel_client(port).ping(), timeout=10, what=f"redis-sentinel on port {port}")

    # -- asking

    @property
    def sentinel_ports(self) -> list[int]:
        return list(self.sentinel_procs)

    def sentinel_url(self) -> str:
        """The kombu/Celery broker URL of the group: every Sentinel, `;`-separated, each with the password.
        kombu also needs the master name (transport option `master_name`; the worker: JOBQUEUE_BROKER_MASTER_NAME
        or the default, contract.SENTINEL_MASTER_NAME)."""
        return ";".join(f"sentinel://:{self.password}@{HOST}:{port}/0" for port in self.sentinel_ports)

    def sentinel(self) -> redis.sentinel.Sentinel:
        """A redis-py Sentinel client of the group (password for Sentinels and members)."""
        return redis.sentinel.Sentinel(  # type: ignore[no-untyped-call]
            [(HOST, port) for port in self.sentinel_ports],
            sentinel_kwargs={"password": self.password, "socket_timeout": 2},
            password=self.password,
            socket_timeout=2,
        )

    def master_address(self) -> Address:
        """The master as the Sentinels name it now (raises redis.sentinel.MasterNotFoundError when none does)."""
        host, port = self.sentinel().discover_master(self.master_name)  # type: ignore[no-untyped-call]
        return str(host), int(port)

    def master_port(self) -> int:
        return self.master_address()[1]

    def master(self) -> RedisServer:
        """The RedisServer the Sentinels name master now: its `url` and `client()` reach it directly."""
        return self.servers[self.master_port()]

    def wait_for_new_master(self, old: Address, timeout: float = 60) -> Address:
        """Wait until the Sentinels name a master other than `old`, and it says it is one; return it."""

        def promoted() -> Address | None:
            address = self.master_address()
            if address == old:  # never ask the old one: frozen, it would answer nothing until the timeouts
                return None
            role = self.servers[address[1]].client().execute_command("ROLE")[0]  # type: ignore[no-untyped-call]
            return address if role in (b"master", "master") else None

        return wait_until(promoted, timeout=timeout, what=f"Sentinel to promote a replica instead of {old}")

    def wait_healthy(self, timeout: float = 60) -> None:
        """Wait until every Sentinel agrees on one master, sees its peers and `replicas` replicas, and the master
        has them all in sync: what a next failover needs."""

        def healthy() -> bool:
            masters = set()
            for port in self.sentinel_ports:
                state: dict[str, Any] = self._sentinel_client(port).sentinel_master(self.master_name)  # type: ignore[assignment]
                if state["num-other-sentinels"] != self.sentinels - 1 or state["num-slaves"] < self.replicas:
                    return False
                if state.get("is_odown") or state.get("is_sdown") or state.get("is_master_down"):
                    return False
                masters.add(int(state["port"]))
            return len(masters) == 1 and self._online_replicas(masters.pop()) == self.replicas

        wait_until(healthy, timeout=timeout, what="the Sentinel group healthy (one master, replicas in sync)")

    def _online_replicas(self, port: int) -> int:
        info = self.servers[port].client().info("replication")
        if info.get("role") != "master":
            return 0
        slaves = [info[key] for key in info if key.startswith("slave") and isinstance(info[key], dict)]
        return sum(1 for slave in slaves if slave.get("state") == "online" and int(slave["port"]) in self.live_ports())

    def live_ports(self) -> set[int]:
        """The members whose process runs and is not frozen."""
        return {port for port, server in self.servers.items() if server.proc is not None and port not in self.frozen}

    def _sentinel_client(self, port: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=port, password=self.password, socket_timeout=5, decode_responses=True)

    # -- faults

    def kill_master(self) -> Address:
        """SIGKILL the current master (no shutdown, no last fsync); return its address."""
        address = self.master_address()
        server = self.servers[address[1]]
        assert server.proc is not None
        os.killpg(server.proc.pid, signal.SIGKILL)  # its group: an AOF rewrite's child too
        server.proc.wait(10)
        server.proc = None
        return address

    def freeze_master(self) -> Address:
        """SIGSTOP the current master: its connections stay open and nothing answers (as when its node dies,
        except that its kernel still answers TCP keepalive probes)."""
        address = self.master_address()
        self.freeze(address[1])
        return address

    def freeze(self, port: int) -> None:
        """SIGSTOP one member (`thaw` or `stop` wakes it)."""
        proc = self.servers[port].proc
        assert proc is not None
        os.killpg(proc.pid, signal.SIGSTOP)
        self.frozen.add(port)

    def replica_ports(self) -> list[int]:
        """The running members other than the master the Sentinels name now."""
        master = self.master_port()
        return sorted(port for port in self.live_ports() if port != master)

    def thaw(self, port: int) -> None:
        """SIGCONT a frozen member (Sentinel then turns it into a replica of the new master)."""
        proc = self.servers[port].proc
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGCONT)
        self.frozen.discard(port)

    def restart(self, port: int) -> None:
        """Start a killed member again on its port, with its data (Sentinel makes it a replica of the master)."""
        self.servers[port].start()
