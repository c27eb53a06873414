"""One worker thread per Pod: start its containers, watch them, report status, stop them on deletion."""

from __future__ import annotations

import concurrent.futures
import datetime
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from kubernetes.client.rest import ApiException

from jobqueue_devenv.nodeagent import envvars, hostprocess, logs, memory, oci, probes, status, streaming, volumes
from jobqueue_devenv.nodeagent.backoff import BackOff, should_restart
from jobqueue_devenv.nodeagent.containers import MARKER, ContainerProcess, find_executable, in_netns
from jobqueue_devenv.nodeagent.imagestore import Image, ImageStore
from jobqueue_devenv.nodeagent.network import NETNS_ETC, NETNS_RUN, PodNetwork
from jobqueue_devenv.nodeagent.runc import RuncContainer

log = logging.getLogger("node-agent.pods")

TICK = 0.2
MEMORY_PERIOD = 0.5
RETRY_START = 2.0
TERMINATION_PATH = "/dev/termination-log"
"""The default terminationMessagePath; a container from an image gets a file there, read when it ends."""
TERMINATION_FILE_BYTES = 4096
MINIMUM_GRACE = 2.0
"""Seconds a container always gets after SIGTERM, even when a preStop hook used the grace period up."""


def now_stamp() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class HostsBook(Protocol):
    def register(self, path: str, namespace: str, name: str, ip: str) -> None: ...
    def unregister(self, path: str) -> None: ...
    def pod_hosts(self, namespace: str, name: str, ip: str) -> str: ...


@dataclass
class Runtime:
    """What every Pod worker shares."""

    core: Any  # kubernetes.client.CoreV1Api
    network: PodNetwork
    hosts: HostsBook
    directory: Path
    host_ip: str
    backoff: BackOff
    base_env: Callable[[Mapping[str, Any]], dict[str, str]]
    """What a host process gets before its own env (PATH with the agent's Python first...)."""
    service_env: Callable[[Mapping[str, Any]], dict[str, str]]
    """What a container from an image gets on top of the image's env (HOSTNAME, KUBERNETES_SERVICE_*)."""
    secrets: envvars.SourceLookup
    config_maps: envvars.SourceLookup
    volume_sources: volumes.Sources
    images: ImageStore
    runc_root: Path
    cgroup_parent: str
    """Containers' cgroups go under it (one per cluster)."""


@dataclass
class Container:
    """The life of one container of the Pod across its restarts."""

    spec: dict[str, Any]
    process: ContainerProcess | RuncContainer | None = None
    image: Image | None = None
    """The image of the current run; None when it runs as a host process (no such image in local storage)."""
    pulls_failed: int = 0
    container_id: str = ""
    """Of the latest run: runc://ID (from an image) or process://NAME (a host process)."""
    plan: Path | None = None
    """The mounter's plan of the current run, when the container has volumes (see `volumes`)."""
    host_executable: str = ""
    """What it runs as a host process (its image is `hostprocess.HOST_PROCESS_IMAGE`), else empty."""
    env: dict[str, str] = field(default_factory=dict)
    runs: int = 0
    started_at: str = ""
    waiting_reason: str = "ContainerCreating"
    waiting_message: str = ""
    terminated: status.Terminated | None = None
    last_terminated: status.Terminated | None = None
    next_start: float = 0.0
    delay: float | None = None
    done: bool = False
    ready: bool = False
    oom_killed: bool = False
    readiness: probes.ProbeTracker | None = None
    liveness: probes.ProbeTracker | None = None
    startup: probes.ProbeTracker | None = None
    last_memory_check: float = 0.0

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def command(self, argv: list[str]) -> list[str]:
        """`argv` as run in the container's mount view (its volumes), for the process, probes and hooks."""
        return volumes.mounter_command(self.plan, argv) if self.plan is not None else argv

    def exec_argv(self, netns: str, argv: list[str], tty: bool = False) -> list[str]:
        """`argv` run in the container: inside the image's container, or in the host process's view.

        With `tty` the caller gives it a pseudo-terminal as stdin/stdout/stderr; `setsid --ctty` makes
        that its controlling terminal (runc then hands the command a terminal of its own).
        """
        if isinstance(self.process, RuncContainer):
            argv = self.process.exec_argv(argv, tty)
        else:
            argv = in_netns(netns, self.command(argv))
        return ["setsid", "--ctty", *argv] if tty else argv

    def view(self) -> status.ContainerView:
        waiting = status.ContainerView(
            name=self.name,
            state="waiting",
            restart_count=max(self.runs - 1, 0),
            last_terminated=self.last_terminated,
            reason=self.waiting_reason,
            message=self.waiting_message,
            container_id=self.container_id,
            image_id=f"sha256:{self.image.id}" if self.image is not None else "",
            image=self.image.reference if self.image is not None else "",
            host_executable=self.host_executable,
        )
        if self.process is not None:
            return replace(waiting, state="running", ready=self.ready, started_at=self.started_at, reason="")
        if self.done and self.terminated is not None:
            return replace(waiting, state="terminated", terminated=self.terminated, reason="")
        return waiting


class PodWorker(threading.Thread):
    def __init__(self, pod: dict[str, Any], runtime: Runtime, on_exit: Callable[[str], None]) -> None:
        meta = pod["metadata"]
        super().__init__(name=f"pod-{meta['namespace']}/{meta['name']}", daemon=True)
        self.pod = pod
        self.uid: str = meta["uid"]
        self.runtime = runtime
        self.on_exit = on_exit
        self.wake = threading.Event()
        self.vanished = False
        self.containers = [Container(spec=c) for c in pod["spec"]["containers"]]
        self.folder = runtime.directory / "pods" / f"{meta['namespace']}_{meta['name']}_{self.uid}"
        self.sandbox: tuple[int, str, str] | None = None
        self.volumes = volumes.PodVolumes(pod, self.folder, runtime.volume_sources)
        self.volumes_ready = False
        self.next_volume_try = 0.0
        self.start_time = now_stamp()
        self.last_status: dict[str, Any] | None = None
        self.finished = (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")
        """A Pod that ended before this agent started (a restart of the agent): never run it again."""

    # Called from the informer thread.
    def update(self, pod: dict[str, Any]) -> None:
        self.pod = pod
        self.volumes.pod = pod
        self.wake.set()

    def gone(self) -> None:
        self.vanished = True
        self.wake.set()

    def run(self) -> None:
        try:
            while True:
                if self.vanished:
                    self._kill_now()
                    return
                if self.pod["metadata"].get("deletionTimestamp"):
                    self._terminate()
                    return
                try:
                    self._sync()
                except Exception:
                    log.exception("%s: sync failed", self.name)
                self.wake.wait(TICK)
                self.wake.clear()
        except Exception:
            log.exception("%s: worker failed", self.name)
            self._kill_now()
        finally:
            self.on_exit(self.uid)

    def writes(self, container_name: str, path: Path) -> bool:
        """Is `path` the log of a run of this container that is still going? (`kubectl logs -f` follows it.)"""
        for container in self.containers:
            if container.name == container_name and container.process is not None:
                return path == logs.run_log(self.folder, container.name, container.runs - 1)
        return False

    def exec_target(self, container_name: str) -> streaming.ExecTarget:
        """How `kubectl exec` runs a command in one of this Pod's running containers (kubeletapi)."""
        for container in self.containers:
            if container.name == container_name and container.process is not None and self.sandbox is not None:
                argv = functools.partial(container.exec_argv, self.netns)
                return streaming.ExecTarget(argv, dict(container.env), str(self.folder))
        raise streaming.RequestError(404, f'container not found ("{container_name}")')

    # -- running --------------------------------------------------------------------------------------

    @property
    def netns(self) -> str:
        assert self.sandbox is not None
        return self.sandbox[1]

    @property
    def pod_ip(self) -> str:
        return self.sandbox[2] if self.sandbox else ""

    def _sync(self) -> None:
        if self.finished:
            return
        if self.sandbox is None:
            meta = self.pod["metadata"]
            self.folder.mkdir(parents=True, exist_ok=True)
            placeholder = self.runtime.hosts.pod_hosts(meta["namespace"], meta["name"], "")
            self.sandbox = self.runtime.network.create_sandbox(placeholder)
            self.runtime.hosts.register(f"/etc/netns/{self.netns}/hosts", meta["namespace"], meta["name"], self.pod_ip)
            log.info("%s: sandbox %s, IP %s", self.name, self.netns, self.pod_ip)
        if not self._mount_volumes():
            self._report()
            return
        children = memory.children_map()
        for container in self.containers:
            self._step(container, children)
        self._report()

    def _mount_volumes(self) -> bool:
        """Volumes come first, as with the kubelet: no container starts before all of them are set up."""
        if self.volumes_ready:
            self.volumes.refresh()
            return True
        if time.monotonic() < self.next_volume_try:
            return False
        self.next_volume_try = time.monotonic() + RETRY_START
        try:
            self.volumes.prepare()
        except (volumes.VolumeError, OSError) as exc:
            for container in self.containers:
                if container.process is None and not container.done:
                    self._wait(container, "ContainerCreating", f"MountVolume.SetUp failed: {exc}")
            return False
        except Exception as exc:  # an API error: try again on the next tick
            log.warning("%s: volumes not ready: %s", self.name, exc)
            return False
        self.volumes_ready = True
        for container in self.containers:
            container.next_start = 0.0 if container.runs == 0 else container.next_start
        return True

    def _pod_with_ip(self) -> dict[str, Any]:
        pod = dict(self.pod)
        pod["status"] = dict(pod.get("status") or {}, podIP=self.pod_ip, hostIP=self.runtime.host_ip)
        return pod

    def _step(self, container: Container, children: dict[int, list[int]]) -> None:
        now = time.monotonic()
        if container.process is None:
            if not container.done and now >= container.next_start:
                self._start(container)
            return
        code = container.process.poll()
        if code is None and isinstance(container.process, ContainerProcess):
            code = self._check_memory(container, now, children)  # a runc container's cgroup enforces its own
        if code is None:
            code = self._probe(container, now)
        if code is not None:
            self._ended(container, code)

    def _start(self, container: Container) -> None:
        image_name = str(container.spec.get("image") or "")
        image = self.runtime.images.lookup(image_name) if image_name else None
        if image is None and not hostprocess.runs_on_host(image_name):
            self._image_missing(container, image_name)
            return
        pod = self._pod_with_ip()
        log_path = logs.run_log(self.folder, container.name, container.runs)
        try:
            if image is not None:
                started = self._start_from_image(container, image, pod, log_path)
            else:
                started = self._start_on_host(container, pod, log_path)
        except (envvars.ConfigError, oci.ConfigError, volumes.VolumeError) as exc:
            self._wait(container, "CreateContainerConfigError", str(exc))
            return
        except OSError as exc:
            self._wait(container, "RunContainerError", str(exc))
            return
        if not started:
            return
        container.image = image
        process = container.process
        container.container_id = (
            f"runc://{process.id}" if isinstance(process, RuncContainer) else f"process://{container.name}"
        )
        container.runs += 1
        container.pulls_failed = 0
        container.started_at = now_stamp()
        container.waiting_reason = container.waiting_message = ""
        container.oom_killed = False
        readiness, liveness = container.spec.get("readinessProbe"), container.spec.get("livenessProbe")
        container.readiness = probes.ProbeTracker(probes.ProbeSpec.from_api(readiness), False) if readiness else None
        container.liveness = probes.ProbeTracker(probes.ProbeSpec.from_api(liveness), True) if liveness else None
        startup = container.spec.get("startupProbe")
        container.startup = probes.ProbeTracker(probes.ProbeSpec.from_api(startup), False) if startup else None
        container.ready = readiness is None
        assert container.process is not None
        where = f"image {image.reference}" if image is not None else "a host process"
        log.info("%s: started %s from %s (pid %d)", self.name, container.name, where, container.process.pid)

    def _image_missing(self, container: Container, image: str) -> None:
        """The kubelet's Waiting reasons for an image that is not there and cannot be pulled."""
        if container.spec.get("imagePullPolicy") == "Never":
            self._wait(
                container, "ErrImageNeverPull", f'Container image "{image}" is not present with pull policy of Never'
            )
            return
        container.pulls_failed += 1
        if container.pulls_failed % 2:  # as the kubelet: a failed pull attempt, then its back-off, in turn
            self._wait(
                container,
                "ErrImagePull",
                f'failed to pull image "{image}": the local node agent pulls from no registry and the image '
                "is not in local storage (build it, e.g. `make images`)",
            )
        else:
            self._wait(container, "ImagePullBackOff", f'Back-off pulling image "{image}"')

    def _start_on_host(self, container: Container, pod: dict[str, Any], log_path: Path) -> bool:
        env = envvars.container_env(
            pod, container.spec, self.runtime.secrets, self.runtime.config_maps, self.runtime.base_env(pod)
        )
        argv = envvars.command_line(container.spec, env)
        executable = find_executable(argv[0], env.get("PATH", ""))
        if executable is None:
            self._wait(container, "CreateContainerError", f'executable "{argv[0]}" not found in PATH {env.get("PATH")}')
            return False
        container.host_executable = executable
        cwd = container.spec.get("workingDir") or str(self.folder)
        container.plan = None
        if volumes.needs_mounter(container.spec):
            container.plan = self.volumes.write_plan(container.spec, env)
            cwd = str(self.folder)  # the mounter changes to workingDir once the volumes are mounted
        container.process = ContainerProcess(container.command(argv), env, cwd, log_path, self.netns)
        container.env = env
        return True

    def _start_from_image(self, container: Container, image: Image, pod: dict[str, Any], log_path: Path) -> bool:
        spec = container.spec
        oci.verify_run_as_non_root(pod, spec, image.user)
        own = envvars.container_env(pod, spec, self.runtime.secrets, self.runtime.config_maps, {})
        account = oci.account(pod, spec, image.user, image.read_file("/etc/passwd"), image.read_file("/etc/group"))
        env = {"PATH": oci.DEFAULT_PATH, **oci.image_env(image), "HOME": account.home}
        env.update(self.runtime.service_env(pod))
        env.update(own)
        mounts = [oci.Mount(m["source"], m["target"], m["readOnly"]) for m in self.volumes.mounts(spec, env)]
        etc = NETNS_ETC / self.netns
        hostname = self.folder / "hostname"
        hostname.write_text(pod["metadata"]["name"] + "\n")
        termination = self.folder / container.name / f"{container.runs}.termination"
        termination.parent.mkdir(parents=True, exist_ok=True)
        termination.write_bytes(b"")
        termination.chmod(0o666)  # whoever the container runs as writes its last words there
        mounts += [
            oci.Mount(str(termination), spec.get("terminationMessagePath") or TERMINATION_PATH, False),
            oci.Mount(str(etc / "hosts"), "/etc/hosts", False),
            oci.Mount(str(etc / "resolv.conf"), "/etc/resolv.conf", False),
            oci.Mount(str(hostname), "/etc/hostname", False),
        ]
        pod_context = pod["spec"].get("securityContext") or {}
        groups = [int(g) for g in pod_context.get("supplementalGroups") or []]
        if pod_context.get("fsGroup") is not None:
            groups.append(int(pod_context["fsGroup"]))
        limit = ((spec.get("resources") or {}).get("limits") or {}).get("memory")
        container_id = f"{self.uid}-{container.name}-{container.runs}"
        config = oci.runtime_config(
            process_args=oci.argv(spec, image, own),
            env=env,
            cwd=spec.get("workingDir") or image.working_dir or "/",
            user=account,
            context=oci.security_context(pod, spec),
            supplemental_groups=groups,
            hostname=pod["metadata"]["name"],
            netns_path=str(NETNS_RUN / self.netns),
            mounts=mounts,
            memory_limit=memory.parse_quantity(limit) if limit is not None else None,
            cgroups_path=f"/{self.runtime.cgroup_parent}/{container_id}",
        )
        runtime_env = {"PATH": oci.DEFAULT_PATH, MARKER: str(self.runtime.directory.resolve())}
        container.plan = None
        container.process = RuncContainer(
            container_id,
            self.folder / "bundles" / container_id,
            config,
            image.layers,
            log_path,
            self.runtime.runc_root,
            runtime_env,
        )
        container.env = env
        return True

    def _wait(self, container: Container, reason: str, message: str) -> None:
        if (container.waiting_reason, container.waiting_message) != (reason, message):
            log.warning("%s: %s cannot start: %s: %s", self.name, container.name, reason, message)
        container.waiting_reason, container.waiting_message = reason, message
        container.next_start = time.monotonic() + RETRY_START

    def _check_memory(self, container: Container, now: float, children: dict[int, list[int]]) -> int | None:
        limit = ((container.spec.get("resources") or {}).get("limits") or {}).get("memory")
        if limit is None or container.process is None or now - container.last_memory_check < MEMORY_PERIOD:
            return None
        container.last_memory_check = now
        used = memory.tree_pss_bytes(container.process.pid, children)
        if used <= memory.parse_quantity(limit):
            return None
        log.warning("%s: %s uses %d bytes > limit %s: OOM kill", self.name, container.name, used, limit)
        container.oom_killed = True
        container.process.kill_group()
        return container.process.wait(5)

    def _probe(self, container: Container, now: float) -> int | None:
        assert container.process is not None
        started = container.process.started
        if container.startup and not container.startup.passing:  # the other probes wait until it passes
            if container.startup.due(now, started):
                container.startup.record(self._run_probe(container, "startupProbe"), time.monotonic())
                if container.startup.given_up:
                    log.warning("%s: %s failed its startup probe: restarting", self.name, container.name)
                    return container.process.stop(self._grace())
            if not container.startup.passing:
                return None
        if container.liveness and container.liveness.due(now, started):
            alive = container.liveness.record(self._run_probe(container, "livenessProbe"), time.monotonic())
            if not alive:
                log.warning("%s: %s failed its liveness probe: restarting", self.name, container.name)
                return container.process.stop(self._grace())
        if container.readiness and container.readiness.due(now, started):
            container.ready = container.readiness.record(self._run_probe(container, "readinessProbe"), time.monotonic())
        return None

    def _run_probe(self, container: Container, kind: str) -> bool:
        probe = container.spec[kind]
        timeout = float(probe.get("timeoutSeconds") or 1)
        try:
            if "exec" in probe:
                argv = container.exec_argv(self.netns, probe["exec"]["command"])
                return probes.run_exec(argv, container.env, str(self.folder), timeout)
            if "httpGet" in probe:
                get = probe["httpGet"]
                port = probes.resolve_port(get["port"], container.spec)
                return probes.http_get(self.pod_ip, port, get.get("path", "/"), timeout, get.get("httpHeaders") or ())
            if "tcpSocket" in probe:
                return probes.tcp_connect(
                    self.pod_ip, probes.resolve_port(probe["tcpSocket"]["port"], container.spec), timeout
                )
        except ValueError as exc:
            log.warning("%s: %s %s: %s", self.name, container.name, kind, exc)
            return False
        log.warning("%s: %s %s has no supported handler (exec, httpGet, tcpSocket)", self.name, container.name, kind)
        return False

    def _termination_message(self, container: Container, code: int) -> str:
        """The file at terminationMessagePath (containers from images), else the log tail per the policy."""
        written = self._termination_file(container)
        try:
            with written.open("rb") as handle:
                text = handle.read(TERMINATION_FILE_BYTES).decode(errors="replace").strip()
        except OSError:
            text = ""
        if text:
            return text
        return status.termination_message(
            container.spec.get("terminationMessagePolicy"), code, self._log_tail(container)
        )

    def _termination_file(self, container: Container) -> Path:
        return self.folder / container.name / f"{max(container.runs - 1, 0)}.termination"

    def _log_tail(self, container: Container) -> str:
        path = logs.run_log(self.folder, container.name, max(container.runs - 1, 0))
        try:
            with path.open("rb") as log_file:
                log_file.seek(max(path.stat().st_size - status.TERMINATION_MESSAGE_BYTES, 0))
                return log_file.read().decode(errors="replace")
        except OSError:
            return ""

    def _ended(self, container: Container, returncode: int) -> None:
        process = container.process
        assert process is not None
        process.kill_group()  # the container ends with its main process
        if isinstance(process, RuncContainer):
            process.close()
            container.oom_killed = container.oom_killed or process.oom_killed
        code = status.exit_code_of(returncode)
        ended = status.Terminated(
            exit_code=code,
            reason=status.termination_reason(code, container.oom_killed),
            started_at=container.started_at,
            finished_at=now_stamp(),
            message=self._termination_message(container, code),
        )
        log.info("%s: %s exited with %d (%s)", self.name, container.name, code, ended.reason)
        container.process, container.ready = None, False
        if should_restart(self.pod["spec"].get("restartPolicy", "Always"), code):
            container.last_terminated = ended
            container.delay = self.runtime.backoff.next_delay(container.delay, time.monotonic() - process.started)
            container.next_start = time.monotonic() + container.delay
            container.waiting_reason = "CrashLoopBackOff"
            container.waiting_message = (
                f"back-off {container.delay:g}s restarting failed container={container.name} pod={self.name}"
            )
        else:
            container.terminated, container.done = ended, True

    def _report(self) -> None:
        body = status.pod_status(
            self._pod_with_ip(),
            [c.view() for c in self.containers],
            self.pod_ip,
            self.runtime.host_ip,
            self.start_time,
            now_stamp(),
        )
        if body == self.last_status:
            return
        meta = self.pod["metadata"]
        try:
            self.runtime.core.patch_namespaced_pod_status(meta["name"], meta["namespace"], {"status": body})
            self.last_status = body
        except ApiException as exc:
            if exc.status != 404:
                raise

    # -- stopping -------------------------------------------------------------------------------------

    def _grace(self) -> float:
        meta, spec = self.pod["metadata"], self.pod["spec"]
        for value in (meta.get("deletionGracePeriodSeconds"), spec.get("terminationGracePeriodSeconds")):
            if value is not None:
                return float(value)
        return 30.0

    def _stop_container(self, container: Container, deadline: float) -> None:
        process = container.process
        if process is None:
            return
        hook = ((container.spec.get("lifecycle") or {}).get("preStop") or {}).get("exec")
        if hook and process.poll() is None:
            argv = container.exec_argv(self.netns, hook["command"])
            ok = probes.run_exec(argv, container.env, str(self.folder), max(deadline - time.monotonic(), 0.1))
            log.info("%s: preStop hook of %s %s", self.name, container.name, "succeeded" if ok else "failed")
        code = process.stop(max(deadline - time.monotonic(), MINIMUM_GRACE))
        log.info("%s: %s stopped with %d", self.name, container.name, status.exit_code_of(code))
        container.process = None

    def _terminate(self) -> None:
        """The kubelet's graceful deletion: preStop, SIGTERM, grace period, SIGKILL, then remove the Pod."""
        grace = self._grace()
        log.info("%s: deleting with a grace period of %gs", self.name, grace)
        deadline = time.monotonic() + grace
        running = [c for c in self.containers if c.process is not None]
        if running:
            with concurrent.futures.ThreadPoolExecutor(len(running)) as pool:
                list(pool.map(lambda c: self._stop_container(c, deadline), running))
        self._remove_sandbox()
        meta = self.pod["metadata"]
        try:
            self.runtime.core.delete_namespaced_pod(
                meta["name"], meta["namespace"], body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}}
            )
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def _kill_now(self) -> None:
        for container in self.containers:
            if container.process is not None:
                container.process.kill_group()
                container.process.wait(5)
                container.process = None
        self._remove_sandbox()

    def _remove_sandbox(self) -> None:
        if self.sandbox is not None:
            self.runtime.hosts.unregister(f"/etc/netns/{self.netns}/hosts")
            self.runtime.network.delete_sandbox(self.sandbox[0])
            self.sandbox = None
        self.volumes.remove()  # mounts lived in the containers' own mount namespaces: gone with them
