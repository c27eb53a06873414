"""A Pod's status as the kubelet reports it, computed from what its containers are doing (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from jobqueue_devenv.nodeagent import hostprocess

State = Literal["waiting", "running", "terminated"]


@dataclass(frozen=True)
class Terminated:
    exit_code: int
    reason: str
    started_at: str
    finished_at: str
    message: str = ""

    def to_api(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "exitCode": self.exit_code,
            "reason": self.reason,
            "startedAt": self.started_at,
            "finishedAt": self.finished_at,
        }
        if self.message:
            out["message"] = self.message
        return out


@dataclass(frozen=True)
class ContainerView:
    """One container, as the status needs it."""

    name: str
    state: State
    restart_count: int = 0
    ready: bool = False
    reason: str = ""  # for waiting
    message: str = ""  # for waiting
    started_at: str = ""  # for running
    terminated: Terminated | None = None  # for terminated
    last_terminated: Terminated | None = None
    container_id: str = ""  # runc://ID for a container from an image, process://NAME for a host process
    image_id: str = ""  # sha256:ID of the image it runs from
    image: str = ""  # the image as found in local storage (the spec's name when empty)
    host_executable: str = ""  # what it runs as a host process (hostprocess.HOST_PROCESS_IMAGE), else empty


TERMINATION_MESSAGE_BYTES = 2048
TERMINATION_MESSAGE_LINES = 80


def termination_message(policy: str | None, exit_code: int, log_tail: str) -> str:
    """What the kubelet reports as a terminated container's message: with `FallbackToLogsOnError`, the
    last lines of its log when it failed (at most 2 KiB, 80 lines); nothing otherwise (the process runtime
    has no termination-log file)."""
    if policy != "FallbackToLogsOnError" or exit_code == 0:
        return ""
    lines = log_tail[-TERMINATION_MESSAGE_BYTES:].splitlines()[-TERMINATION_MESSAGE_LINES:]
    return "\n".join(lines).strip()


def termination_reason(exit_code: int, oom_killed: bool) -> str:
    if oom_killed:
        return "OOMKilled"
    return "Completed" if exit_code == 0 else "Error"


def exit_code_of(returncode: int) -> int:
    """Popen's negative "killed by signal N" as a shell and the kubelet report it: 128 + N."""
    return 128 - returncode if returncode < 0 else returncode


def phase(containers: Sequence[ContainerView], restart_policy: str) -> str:
    """The kubelet's rules: a container waiting that never ran keeps the Pod Pending."""
    if any(c.state == "waiting" and c.last_terminated is None for c in containers):
        return "Pending"
    if any(c.state == "running" for c in containers):
        return "Running"
    if restart_policy == "Always":
        return "Running"
    ended = [c.terminated for c in containers if c.terminated is not None]
    if len(ended) < len(containers):
        return "Running"  # waiting to be restarted (OnFailure)
    if all(t.exit_code == 0 for t in ended):
        return "Succeeded"
    return "Failed" if restart_policy == "Never" else "Running"


def _container_status(view: ContainerView, image: str) -> dict[str, Any]:
    state: dict[str, Any]
    if view.state == "running":
        state = {"running": {"startedAt": view.started_at}}
    elif view.state == "terminated" and view.terminated is not None:
        state = {"terminated": view.terminated.to_api()}
    else:
        waiting: dict[str, Any] = {"reason": view.reason or "ContainerCreating"}
        if view.message:
            waiting["message"] = view.message
        state = {"waiting": waiting}
    return {
        "name": view.name,
        "state": state,
        "lastState": {"terminated": view.last_terminated.to_api()} if view.last_terminated else {},
        "ready": view.ready,
        "started": view.state == "running",
        "restartCount": view.restart_count,
        "image": view.image or image,
        "imageID": view.image_id,
        **({"containerID": view.container_id} if view.container_id else {}),
    }


def _condition(
    kind: str, ok: bool, now: str, previous: Mapping[str, Mapping[str, Any]], reason: str = "", message: str = ""
) -> dict[str, Any]:
    status = "True" if ok else "False"
    before = previous.get(kind)
    since = before["lastTransitionTime"] if before and before.get("status") == status else now
    out: dict[str, Any] = {"type": kind, "status": status, "lastProbeTime": None, "lastTransitionTime": since}
    if not ok and reason:
        out["reason"] = reason
        out["message"] = message
    return out


def pod_status(
    pod: Mapping[str, Any],
    containers: Sequence[ContainerView],
    pod_ip: str,
    host_ip: str,
    start_time: str,
    now: str,
) -> dict[str, Any]:
    """The whole `status` of a Pod; condition transition times are kept from the Pod's current status."""
    spec = pod["spec"]
    previous = {c["type"]: c for c in (pod.get("status") or {}).get("conditions") or []}
    current_phase = phase(containers, spec.get("restartPolicy", "Always"))
    unready = [c.name for c in containers if not c.ready]
    ready = not unready and current_phase == "Running"
    if current_phase in ("Succeeded", "Failed"):
        reason, message = "PodCompleted", ""
    else:
        reason, message = "ContainersNotReady", f"containers with unready status: [{' '.join(unready)}]"
    images = {c["name"]: c.get("image", "") for c in spec.get("containers", [])}
    status: dict[str, Any] = {
        "phase": current_phase,
        "hostIP": host_ip,
        "hostIPs": [{"ip": host_ip}],
        "startTime": start_time,
        "conditions": [
            _condition("PodReadyToStartContainers", bool(pod_ip), now, previous),
            _condition("Initialized", True, now, previous),
            _condition("ContainersReady", ready, now, previous, reason, message),
            _condition("Ready", ready, now, previous, reason, message),
            _condition("PodScheduled", True, now, previous),
        ],
        "containerStatuses": [_container_status(c, images.get(c.name, "")) for c in containers],
        "qosClass": (pod.get("status") or {}).get("qosClass", "BestEffort"),
    }
    on_host = [(c.name, images.get(c.name, ""), c.host_executable) for c in containers if c.host_executable]
    if on_host:
        since = (previous.get(hostprocess.CONDITION) or {}).get("lastTransitionTime") or now
        status["conditions"].append(hostprocess.condition(on_host, since))
    if pod_ip:
        status["podIP"] = pod_ip
        status["podIPs"] = [{"ip": pod_ip}]
    return status
