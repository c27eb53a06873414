"""The highly available broker's start-up scripts (`build.bootstrap`), exactly as the builders put them in the
Pods, run as host processes: three Redis members and three Sentinels on 127.0.0.1, with the containers' own
arguments and settings (addresses are `127.0.0.1:<free port>` instead of the Pods' DNS names). Failover is
Sentinel's own; what is tested is that every member and Sentinel finds its place without anyone's help:
on a fresh start, when the master comes back empty before the Sentinels noticed it was gone, and when a
Sentinel starts again with no memory.

No cluster: the same scripts on the real cluster are tests/e2e/test_broker_ha.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis

from jobqueue_devenv.processes import free_port, stop_group
from jobqueue_devenv.waiting import wait_until
from jobqueue_operator import broker, broker_admin, broker_password
from jobqueue_operator.build import bootstrap, redis_ha, sentinel
from jobqueue_operator.build.redis import OPERATOR_USER
from jobqueue_operator.models import SENTINEL_MEMBERS, JobQueue
from jobqueue_worker.contract import SENTINEL_MASTER_NAME

HOST = "127.0.0.1"
PASSWORD = uuid.uuid4().hex + '"\\x'
"""With the characters a configuration file must escape."""
OPERATOR_PASSWORD = uuid.uuid4().hex

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


def _jobqueue() -> JobQueue:
    return JobQueue.model_validate(
        {
            "name": "ha",
            "namespace": "test",
            "spec": {
                "image": "i",
                "app": "a:app",
                "queues": [{"name": "q"}],
                "broker": {
                    "managed": {
                        "highAvailability": {
                            "enabled": True,
                            "downAfterMilliseconds": 2000,
                            "failoverTimeoutMilliseconds": 4000,
                        }
                    }
                },
            },
        }
    )


def _expand(text: str, env: Mapping[str, str]) -> str:
    """The kubelet's `$(VAR)` expansion of defined names."""
    return re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: env.get(m.group(1), m.group(0)), text)


def _container(manifest: dict[str, Any]) -> dict[str, Any]:
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    return dict(container)


def _env(container: dict[str, Any], overrides: Mapping[str, str]) -> dict[str, str]:
    """The container's environment as the kubelet builds it, with the host's addresses in `overrides`."""
    env = {"PATH": os.environ["PATH"], "REDIS_PASSWORD": PASSWORD, "JOBQUEUE_OPERATOR_PASSWORD": OPERATOR_PASSWORD}
    for var in container["env"]:
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
    env.update(overrides)
    return env


def _up(instances: list[dict[str, Any]]) -> int:
    return sum(1 for one in instances if not (one["is_sdown"] or one["is_disconnected"]))


@dataclass
class Group:
    """The members and Sentinels of one broker, each a `sh -c SCRIPT` process like its container's command."""

    directory: Path
    jq: JobQueue = field(default_factory=_jobqueue)
    members: list[int] = field(default_factory=lambda: [free_port() for _ in range(SENTINEL_MEMBERS)])
    sentinels: list[int] = field(default_factory=lambda: [free_port() for _ in range(SENTINEL_MEMBERS)])
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    password: str = PASSWORD
    """What this test's clients log in with (a rotation changes it)."""

    def _addresses(self, ports: list[int]) -> str:
        return " ".join(f"{HOST}:{port}" for port in ports)

    def _start(self, port: int, container: dict[str, Any], extra: list[str], overrides: dict[str, str]) -> None:
        env = _env(
            container,
            {
                bootstrap.Env.MEMBERS: self._addresses(self.members),
                bootstrap.Env.SENTINELS: self._addresses(self.sentinels),
                bootstrap.Env.PASSWORD: self.password,  # a Pod (re)started reads the Secret's password now
                **overrides,
            },
        )
        directory = self.directory / str(port)
        directory.mkdir(parents=True, exist_ok=True)
        args = [_expand(arg, env) for arg in container.get("args", [])] + extra
        with (directory / "log").open("ab") as log:
            self.procs[port] = subprocess.Popen(
                [*container["command"], *args], cwd=directory, env=env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip

    def start_member(self, port: int) -> None:
        container = _container(redis_ha.statefulset(self.jq))
        extra = ["--port", str(port), "--bind", HOST]
        self._start(port, container, extra, {bootstrap.Env.MEMBER: f"{HOST}:{port}"})

    def start_sentinel(self, port: int) -> None:
        container = _container(sentinel.statefulset(self.jq))
        directory = str(self.directory / str(port))
        overrides = {bootstrap.Env.SENTINEL: f"{HOST}:{port}", bootstrap.Env.DIRECTORY: directory}
        self._start(port, container, ["--bind", HOST], overrides)

    def alive(self, port: int) -> bool:
        """Whether the member's liveness probe (its container's exec command) passes."""
        container = _container(redis_ha.statefulset(self.jq))
        env = _env(container, {**self._addresses_env(), bootstrap.Env.MEMBER: f"{HOST}:{port}"})
        command = container["livenessProbe"]["exec"]["command"]
        return subprocess.run(command, env=env, capture_output=True, timeout=30, check=False).returncode == 0

    def _addresses_env(self) -> dict[str, str]:
        return {
            bootstrap.Env.MEMBERS: self._addresses(self.members),
            bootstrap.Env.SENTINELS: self._addresses(self.sentinels),
        }

    def kill(self, port: int, wipe: bool = False) -> None:
        """SIGKILL a member or Sentinel; `wipe`: and lose its data, as a new Pod on an emptyDir does."""
        proc = self.procs.pop(port)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        if wipe:
            shutil.rmtree(self.directory / str(port))

    def stop(self) -> None:
        for proc in self.procs.values():
            stop_group(proc, grace=5)

    def client(self, port: int) -> redis.Redis:
        return redis.Redis(HOST, port, password=self.password, socket_timeout=3, decode_responses=True)

    def role(self, port: int) -> str:
        try:
            return str(self.client(port).execute_command("ROLE")[0])  # type: ignore[no-untyped-call]
        except redis.RedisError:
            return "down"

    def named_master(self, port: int) -> str | None:
        """host:port of the master a Sentinel names, or None."""
        try:
            found = self.client(port).execute_command(  # type: ignore[no-untyped-call]
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", SENTINEL_MASTER_NAME
            )
        except redis.RedisError:
            return None
        return f"{found[0]}:{found[1]}" if found else None

    def replicas_in_sync(self, port: int) -> int:
        try:
            info = self.client(port).info("replication")
        except redis.RedisError:
            return -1
        return sum(1 for key, value in info.items() if key.startswith("slave") and value.get("state") == "online")

    def known(self, port: int) -> tuple[int, int]:
        """(replicas, other Sentinels) a Sentinel knows and sees up; (-1, -1) when it does not answer."""
        client = self.client(port)
        try:
            replicas = client.sentinel_slaves(SENTINEL_MASTER_NAME)
            sentinels = client.sentinel_sentinels(SENTINEL_MASTER_NAME)
        except redis.RedisError:
            return -1, -1
        assert isinstance(replicas, list)
        assert isinstance(sentinels, list)
        return _up(replicas), _up(sentinels)

    def wait_healthy(self, master: int) -> None:
        """`master` is the master with every other member in sync, and every Sentinel names it and sees the
        replicas and its peers (the state a failover needs)."""
        wanted = f"{HOST}:{master}"
        others = SENTINEL_MEMBERS - 1
        wait_until(lambda: self.replicas_in_sync(master) == others, timeout=60, what="replicas in sync")
        wait_until(
            lambda: all(
                self.named_master(port) == wanted and self.known(port) == (others, others) for port in self.sentinels
            ),
            timeout=60,
            what=f"every Sentinel names {wanted} and sees its replicas and peers",
        )


@pytest.fixture
def group(tmp_path: Path) -> Iterator[Group]:
    started = Group(tmp_path)
    try:
        for port in started.members + started.sentinels:  # all at once, as a fresh JobQueue's Pods start
            (started.start_member if port in started.members else started.start_sentinel)(port)
        started.wait_healthy(started.members[0])
        yield started
    finally:
        started.stop()


def test_a_fresh_group_makes_the_first_member_master(group: Group) -> None:
    first, *others = group.members
    assert group.role(first) == "master"
    assert [group.role(port) for port in others] == ["slave", "slave"]
    assert all(group.alive(port) for port in group.members)


def test_the_first_member_named_master_by_sentinels_that_came_up_first_does_not_wait_for_a_promotion(
    tmp_path: Path,
) -> None:
    """A fresh group whose Sentinels start before the first member: they monitor it before it runs, so it finds
    itself named master. With no other member running there is nothing to promote: it starts at once (it used
    to wait `NAMED_MASTER_WAIT` seconds; on the local cluster the waiting member was restarted by its liveness
    probe again and again, and the StatefulSet never made its other members)."""
    group = Group(tmp_path)
    try:
        for port in group.sentinels:
            group.start_sentinel(port)
        first = f"{HOST}:{group.members[0]}"
        wait_until(
            lambda: all(group.named_master(port) == first for port in group.sentinels),
            timeout=60,
            what="the Sentinels monitor the first member before it runs",
        )
        group.start_member(group.members[0])
        wait_until(lambda: group.role(group.members[0]) == "master", timeout=60, what="the first member serves")
        log = (tmp_path / str(group.members[0]) / "log").read_text()
        assert "no other member runs: nothing to wait for" in log
        assert "waiting up to" not in log
        for port in group.members[1:]:
            group.start_member(port)
        group.wait_healthy(group.members[0])
    finally:
        group.stop()


def test_a_replica_attached_to_another_replica_fails_its_liveness_probe(group: Group) -> None:
    """What a replica the Sentinels never saw ends up doing after a failover: following the member that took its
    old master's name. The Sentinels cannot fix a replica they do not know; its restart (the kubelet's, on this
    probe) makes the start-up script attach it to the master they name."""
    _, second, third = group.members
    group.client(third).execute_command("REPLICAOF", HOST, str(second))  # type: ignore[no-untyped-call]
    assert not group.alive(third)
    assert group.alive(second)
    group.kill(third)
    assert not group.alive(third)  # not answering
    group.start_member(third)
    group.wait_healthy(group.members[0])
    assert group.alive(third)


def test_a_master_back_empty_before_the_failover_waits_and_keeps_the_data(group: Group) -> None:
    """The dangerous restart: the master's Pod comes back at once on an empty volume, while the Sentinels still
    name it. Served as the master, it would make the replicas drop their copy of every task."""
    first, *others = group.members
    client = group.client(first)
    client.rpush("tasks", "acknowledged")
    assert client.wait(SENTINEL_MEMBERS - 1, 5000) == SENTINEL_MEMBERS - 1
    group.kill(first, wipe=True)
    group.start_member(first)
    wait_until(
        lambda: group.named_master(group.sentinels[0]) in {f"{HOST}:{port}" for port in others},
        timeout=60,
        what="the Sentinels promote a replica",
    )
    promoted = int(str(group.named_master(group.sentinels[0])).rsplit(":", 1)[1])
    group.wait_healthy(promoted)
    assert group.role(first) == "slave"
    assert group.client(first).lrange("tasks", 0, -1) == ["acknowledged"]
    assert group.client(promoted).lrange("tasks", 0, -1) == ["acknowledged"]


def test_a_sentinel_that_forgot_everything_finds_the_current_master(group: Group) -> None:
    first = group.members[0]
    group.client(group.sentinels[0]).execute_command(  # type: ignore[no-untyped-call]
        "SENTINEL", "FAILOVER", SENTINEL_MASTER_NAME
    )
    wait_until(lambda: group.named_master(group.sentinels[1]) != f"{HOST}:{first}", timeout=60, what="a failover")
    current = int(str(group.named_master(group.sentinels[1])).rsplit(":", 1)[1])
    group.wait_healthy(current)
    restarted = group.sentinels[2]
    group.kill(restarted, wipe=True)
    group.start_sentinel(restarted)
    wait_until(lambda: group.named_master(restarted) is not None, timeout=30, what="the Sentinel is back")
    assert group.named_master(restarted) == f"{HOST}:{current}"  # from its peers, not the first member
    config = (group.directory / str(restarted) / "sentinel.conf").read_text()
    assert f"sentinel monitor {SENTINEL_MASTER_NAME} {HOST} {current} 2" in config


def test_an_empty_member_never_becomes_the_master_of_replicas_that_hold_data(group: Group) -> None:
    """Every Sentinel lost, then the master's Pod back on an empty volume: it waits rather than serve an empty
    dataset the replicas would copy. New Sentinels, knowing every member from the start, promote a replica."""
    first, *others = group.members
    client = group.client(first)
    client.rpush("tasks", "acknowledged")
    assert client.wait(SENTINEL_MEMBERS - 1, 5000) == SENTINEL_MEMBERS - 1
    for port in group.sentinels:
        group.kill(port, wipe=True)
    group.kill(first, wipe=True)
    group.start_member(first)
    log = group.directory / str(first) / "log"
    wait_until(lambda: "not starting as the master" in log.read_text(), timeout=30, what="the member to hold back")
    assert group.role(first) == "down"
    assert [group.client(port).lrange("tasks", 0, -1) for port in others] == [["acknowledged"]] * 2
    for port in group.sentinels:
        group.start_sentinel(port)
    wait_until(
        lambda: group.named_master(group.sentinels[0]) in {f"{HOST}:{port}" for port in others},
        timeout=90,
        what="the new Sentinels promote a replica",
    )
    promoted = int(str(group.named_master(group.sentinels[0])).rsplit(":", 1)[1])
    group.wait_healthy(promoted)
    assert group.role(first) == "slave"
    assert group.client(first).lrange("tasks", 0, -1) == ["acknowledged"]


def _operator_url(group: Group) -> str:
    """`redis.operator_url` of a highly available broker, with the host's addresses: every Sentinel, the
    operator's own user."""
    return ";".join(f"sentinel://{OPERATOR_USER}:{OPERATOR_PASSWORD}@{HOST}:{port}/0" for port in group.sentinels)


def _refuses(port: int, password: str) -> bool:
    try:
        redis.Redis(HOST, port, password=password, socket_timeout=3).ping()
    except redis.AuthenticationError:
        return True
    return False


def test_a_rotated_password_reaches_every_member_and_sentinel_and_replication_and_failover_do_not_use_it(
    group: Group,
) -> None:
    """The rotation's two broker steps (broker_admin.add_password, keep_only_password) through the operator's
    Sentinel URL: the new password on all six instances, then the old one refused by all six. Replication
    (`masteruser`) and the Sentinels (`auth-user`, `sentinel-user`) log in as the operator's user, so a
    failover after the rotation still works: the replicas follow the new master, and the deleted one rejoins.
    (With `masterauth` the rotated password, the replicas cannot sync from the promoted master.)"""
    url = _operator_url(group)
    every = group.members + group.sentinels
    old, new = PASSWORD, uuid.uuid4().hex
    _, state = broker_admin.read_managed([(url, True)], count_held=False)
    assert state.as_operator
    assert state.unread == ()
    assert state.accepted == state.accepted_somewhere == {broker_password.digest(old)}

    broker_admin.add_password(url, new)
    _, state = broker_admin.read_managed([(url, True)], count_held=False)
    assert state.accepted == {broker_password.digest(old), broker_password.digest(new)}
    broker_admin.keep_only_password(url, new)
    _, state = broker_admin.read_managed([(url, True)], count_held=False)
    assert state.accepted == state.accepted_somewhere == {broker_password.digest(new)}
    assert all(_refuses(port, old) for port in every)
    group.password = new
    assert all(group.client(port).ping() for port in every)

    first, *others = group.members
    with broker.connected(url) as master:  # through the Sentinels, as the operator
        master.rpush("tasks", "acknowledged")
        assert master.wait(SENTINEL_MEMBERS - 1, 5000) == SENTINEL_MEMBERS - 1
    group.kill(first)
    wait_until(
        lambda: group.named_master(group.sentinels[0]) in {f"{HOST}:{port}" for port in others},
        timeout=60,
        what="the Sentinels promote a replica after the rotation",
    )
    promoted = int(str(group.named_master(group.sentinels[0])).rsplit(":", 1)[1])
    group.start_member(first)
    group.wait_healthy(promoted)  # every member in sync with the new master: replication logged in
    assert group.client(first).lrange("tasks", 0, -1) == ["acknowledged"]
    with broker.connected(url) as master:
        assert master.lrange("tasks", 0, -1) == [b"acknowledged"]


def test_the_memory_reserve_is_set_on_every_member(group: Group) -> None:
    """broker.set_maxmemory through the operator's Sentinel URL: every member, so a promoted replica serves
    with the maxmemory the operator chose."""
    broker.set_maxmemory(_operator_url(group), 123_456_789)
    assert [int(group.client(port).config_get("maxmemory")["maxmemory"]) for port in group.members] == [123_456_789] * 3
