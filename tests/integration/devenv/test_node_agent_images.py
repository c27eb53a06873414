"""The node agent runs containers from images as the kubelet does (runc, in the Pod's network namespace).

ENTRYPOINT/CMD against `command`/`args`, the image's USER against runAsUser/runAsNonRoot (with the
kubelet's messages), read-only roots and volumes, memory limits enforced by the runtime, exec probes
inside the container, graceful deletion with preStop and SIGTERM to PID 1, and the Waiting reasons of an
image that is not in local storage. The images are small derivations of `jobqueue-worker:dev`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from jobqueue_devenv import cluster, images
from jobqueue_devenv.waiting import wait_until
from tests.conftest import Kubectl
from tests.integration.devenv.test_node_agent import finished_pod, pod_logs

SHOW = (
    "import os, sys; print('argv', sys.argv[1:], 'uid', os.getuid(), 'gid', os.getgid(), 'cwd', os.getcwd(), "
    "'home', os.environ.get('HOME'), 'who', os.environ.get('WHO'), 'app', os.environ.get('PYTHONPATH'), flush=True)"
)
SHOW_IMAGE = "localhost/jobqueue-test-show:dev"
ROOT_IMAGE = "localhost/jobqueue-test-root:dev"
NAMED_USER_IMAGE = "localhost/jobqueue-test-named:dev"


@pytest.fixture(scope="session")
def test_images(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Images FROM the worker image: one that prints what it runs as, one root, one with a user name."""
    if not images.exists(images.WORKER.reference):
        pytest.fail(f"{images.WORKER.reference} is not built: run `make images`")
    base = f"FROM {images.WORKER.reference}\n"
    folder = tmp_path_factory.mktemp("images")
    images.build_derived(
        SHOW_IMAGE, f'{base}ENTRYPOINT ["python", "-c", "{SHOW}"]\nCMD ["from-cmd"]\n', folder / "show"
    )
    images.build_derived(ROOT_IMAGE, f"{base}USER 0\n", folder / "root")
    images.build_derived(NAMED_USER_IMAGE, f"{base}USER worker\n", folder / "named")


def pod(name: str, image: str, **container: Any) -> dict[str, Any]:
    spec = container.pop("pod_spec", {})
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name},
        "spec": {"restartPolicy": "Never", "containers": [{"name": "main", "image": image, **container}], **spec},
    }


def container_status(core: client.CoreV1Api, namespace: str, name: str) -> client.V1ContainerStatus | None:
    statuses = core.read_namespaced_pod(name, namespace).status.container_statuses or []
    return statuses[0] if statuses else None


def waiting_with(core: client.CoreV1Api, namespace: str, name: str, reason: str) -> Callable[[], str]:
    def probe() -> str:
        status = container_status(core, namespace, name)
        waiting = status.state.waiting if status else None
        if waiting is None or waiting.reason != reason:
            raise AssertionError(status and status.state)
        return str(waiting.message)

    return probe


def run_to_end(core: client.CoreV1Api, kubectl: Kubectl, namespace: str, body: dict[str, Any]) -> tuple[Any, str]:
    core.create_namespaced_pod(namespace, body)
    name = body["metadata"]["name"]
    done = wait_until(lambda: finished_pod(core, namespace, name), timeout=60, what=f"pod {name} finished")
    return done, kubectl("logs", name, "-n", namespace).stdout


@pytest.mark.usefixtures("test_images")
def test_command_and_args_against_entrypoint_and_cmd_as_the_kubelet_does(
    core: client.CoreV1Api, kubectl: Kubectl, namespace: str
) -> None:
    done, logs = run_to_end(core, kubectl, namespace, pod("both-from-image", SHOW_IMAGE))
    assert "argv ['from-cmd'] uid 10001 gid 10001 cwd /app home /app" in logs  # ENTRYPOINT + CMD, USER, WORKDIR
    assert "app /app" in logs  # the image's ENV
    status = done.status.container_statuses[0]
    assert status.container_id.startswith("runc://")
    assert status.image_id.startswith("sha256:")

    env = [{"name": "WHO", "value": "me"}]
    _, logs = run_to_end(core, kubectl, namespace, pod("args-only", SHOW_IMAGE, args=["x", "$(WHO)"], env=env))
    assert "argv ['x', 'me']" in logs
    assert "who me" in logs

    command = ["python", "-c", "import sys; print('command', sys.argv[1:])", "a"]
    _, logs = run_to_end(core, kubectl, namespace, pod("command-only", SHOW_IMAGE, command=command))
    assert "command ['a']" in logs
    assert "from-cmd" not in logs

    context = {"runAsUser": 4242, "runAsGroup": 4343}
    as_other = pod("as-other", SHOW_IMAGE, workingDir="/tmp", securityContext=context)
    _, logs = run_to_end(core, kubectl, namespace, as_other)
    assert "uid 4242 gid 4343 cwd /tmp" in logs


@pytest.mark.usefixtures("test_images")
def test_run_as_non_root_is_enforced_with_the_kubelets_reason(core: client.CoreV1Api, namespace: str) -> None:
    non_root = {"securityContext": {"runAsNonRoot": True}}
    cases = {
        "root-image": (ROOT_IMAGE, {}, "container has runAsNonRoot and image will run as root"),
        "named-user": (
            NAMED_USER_IMAGE,
            {},
            "container has runAsNonRoot and image has non-numeric user (worker), cannot verify user is non-root",
        ),
        "as-root": (SHOW_IMAGE, {"securityContext": {"runAsUser": 0}}, "container's runAsUser breaks non-root policy"),
    }
    for name, (image, container, _) in cases.items():
        core.create_namespaced_pod(namespace, pod(name, image, command=["true"], pod_spec=non_root, **container))
    for name, (_, _, message) in cases.items():
        got = wait_until(waiting_with(core, namespace, name, "CreateContainerConfigError"), timeout=30, what=name)
        uid = core.read_namespaced_pod(name, namespace).metadata.uid
        assert got.startswith(message)
        assert f'(pod: "{name}_{namespace}({uid})", container: main)' in got


@pytest.mark.usefixtures("test_images")
def test_read_only_root_with_volumes_and_exec_probes_inside_the_container(
    core: client.CoreV1Api, kubectl: Kubectl, namespace: str
) -> None:
    core.create_namespaced_config_map(namespace, {"metadata": {"name": "settings"}, "data": {"colour": "blue"}})
    script = (
        "import os, time\n"
        "try:\n    open('/app/x', 'w')\nexcept OSError as exc:\n    print('root', exc.strerror, flush=True)\n"
        "open('/tmp/ready', 'w').write('yes')\n"
        "colour, host = open('/etc/settings/colour').read(), open('/etc/hostname').read().strip()\n"
        "print('colour', colour, 'host', host, flush=True)\n"
        "time.sleep(600)\n"
    )
    body = pod(
        "read-only",
        images.WORKER.reference,
        command=["python", "-c", script],
        securityContext={"readOnlyRootFilesystem": True, "allowPrivilegeEscalation": False},
        volumeMounts=[{"name": "tmp", "mountPath": "/tmp"}, {"name": "settings", "mountPath": "/etc/settings"}],
        readinessProbe={"exec": {"command": ["test", "-f", "/tmp/ready"]}, "periodSeconds": 1},
        pod_spec={
            "volumes": [{"name": "tmp", "emptyDir": {}}, {"name": "settings", "configMap": {"name": "settings"}}]
        },
    )
    core.create_namespaced_pod(namespace, body)

    def ready() -> bool:
        status = container_status(core, namespace, "read-only")
        if not (status and status.ready):
            raise AssertionError(status and status.state)
        return True

    wait_until(ready, timeout=60, what="Ready by an exec probe run inside the container")

    def printed_colour() -> str | None:
        out = kubectl("logs", "read-only", "-n", namespace).stdout
        return out if "colour" in out else None

    # The script prints its "colour" line just after it creates the file the probe looks for: wait for it.
    logs = wait_until(printed_colour, timeout=15, what="the script's colour line")
    assert "root Read-only file system" in logs
    assert "colour blue host read-only" in logs
    assert not Path("/tmp/ready").exists()  # the probe looked inside the container, not on the host


def test_memory_limit_is_enforced_by_the_runtime_as_oom_killed_137(
    core: client.CoreV1Api, kubectl: Kubectl, namespace: str
) -> None:
    allocate = "b = bytearray(300 * 1024 * 1024); b[::4096] = b'x' * len(b[::4096]); print('survived')"
    body = pod("hungry", images.WORKER.reference, command=["python", "-c", allocate])
    body["spec"]["containers"][0]["resources"] = {"limits": {"memory": "64Mi"}}
    done, logs = run_to_end(core, kubectl, namespace, body)
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.reason, terminated.exit_code) == ("OOMKilled", 137)
    assert "survived" not in logs


def test_graceful_deletion_runs_pre_stop_then_sigterm_to_pid_1_then_sigkill_after_the_grace_period(
    core: client.CoreV1Api, namespace: str, local_cluster: cluster.ClusterState, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir(mode=0o777)
    out.chmod(0o777)  # the container runs as uid 10001
    polite = (
        "import os, signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: (print('SIGTERM to pid', os.getpid(), flush=True), sys.exit(0)))\n"
        "print('up', flush=True)\ntime.sleep(600)\n"
    )
    stubborn = (
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\nprint('up', flush=True)\ntime.sleep(600)\n"
    )
    volume = {"volumes": [{"name": "out", "hostPath": {"path": str(out), "type": "Directory"}}]}
    pre_stop = {"preStop": {"exec": {"command": ["sh", "-c", "echo done > /out/pre-stop"]}}}
    for name, script, grace in (("polite", polite, 30), ("stubborn", stubborn, 2)):
        body = pod(name, images.WORKER.reference, command=["python", "-c", script], lifecycle=pre_stop,
                   volumeMounts=[{"name": "out", "mountPath": "/out"}],
                   pod_spec={**volume, "terminationGracePeriodSeconds": grace})  # fmt: skip
        body["spec"]["restartPolicy"] = "Always"
        core.create_namespaced_pod(namespace, body)
        wait_until(lambda n=name: "up" in pod_logs(local_cluster, namespace, n), timeout=60, what=f"{name} up")
        started = time.monotonic()
        core.delete_namespaced_pod(name, namespace)
        wait_until(
            lambda n=name: not [p for p in core.list_namespaced_pod(namespace).items if p.metadata.name == n],
            timeout=60,
            what=f"{name} gone",
        )
        took = time.monotonic() - started
        assert (out / "pre-stop").read_text() == "done\n"
        (out / "pre-stop").unlink()
        if name == "polite":
            assert "SIGTERM to pid 1" in pod_logs(local_cluster, namespace, name)
            assert took < 20
        else:
            assert took >= 2  # SIGTERM ignored: SIGKILL only after the grace period


def test_an_image_missing_from_local_storage_waits_with_the_kubelets_reasons(
    core: client.CoreV1Api, namespace: str
) -> None:
    core.create_namespaced_pod(namespace, pod("never", "jobqueue-not-built:1", imagePullPolicy="Never"))
    core.create_namespaced_pod(namespace, pod("pull", "jobqueue-not-built:1", imagePullPolicy="IfNotPresent"))
    message = wait_until(waiting_with(core, namespace, "never", "ErrImageNeverPull"), timeout=30, what="never")
    assert message == 'Container image "jobqueue-not-built:1" is not present with pull policy of Never'
    wait_until(waiting_with(core, namespace, "pull", "ErrImagePull"), timeout=30, what="ErrImagePull")
    wait_until(waiting_with(core, namespace, "pull", "ImagePullBackOff"), timeout=30, what="ImagePullBackOff")
    assert core.read_namespaced_pod("pull", namespace).status.phase == "Pending"


def test_a_container_from_an_image_reports_its_termination_message(
    core: client.CoreV1Api, kubectl: Kubectl, namespace: str
) -> None:
    write = "open('/dev/termination-log', 'w').write('disk full'); raise SystemExit(3)"
    done, _ = run_to_end(
        core, kubectl, namespace, pod("last-words", images.WORKER.reference, command=["python", "-c", write])
    )
    terminated = done.status.container_statuses[0].state.terminated
    assert (terminated.exit_code, terminated.message) == (3, "disk full")

    shout = "print('no file, but this', flush=True); raise SystemExit(4)"
    body = pod("from-logs", images.WORKER.reference, command=["python", "-c", shout])
    body["spec"]["containers"][0]["terminationMessagePolicy"] = "FallbackToLogsOnError"
    done, _ = run_to_end(core, kubectl, namespace, body)
    assert done.status.container_statuses[0].state.terminated.message == "no file, but this"
