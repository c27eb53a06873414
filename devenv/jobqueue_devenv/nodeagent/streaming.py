"""The kubelet's streaming endpoints, `kubectl exec` and `kubectl port-forward`, over SPDY.

kubectl 1.36 speaks WebSockets to the kube-apiserver; since this node does not declare the
`ExtendWebSocketsToKubelet` feature in its status, the apiserver translates to SPDY toward the node,
as it does for every kubelet that predates 1.36. Port-forward needs SPDY in either case (kubectl
tunnels SPDY frames through its WebSocket), so SPDY alone serves both.

- `POST /exec/<ns>/<pod>/<container>?command=...&input=1&output=1&error=1&tty=1`, protocols
  `v5.channel.k8s.io`/`v4.channel.k8s.io`: the client opens an error stream, then stdin, stdout,
  stderr (as asked) and resize (tty); the command runs in the container (`runc exec` for a container
  from an image, the Pod's network namespace and the container's env and volumes for a host process),
  its output goes back on the streams and its exit code on the error stream as a `Status`, as the
  kubelet writes it (`NonZeroExitCode`, cause `ExitCode`), so `kubectl exec ... -- false` exits 1.
  `tty=1` runs the command on a pseudo-terminal (resize messages set its size).
- `POST /portForward/<ns>/<pod>`, protocol `portforward.k8s.io`: each forwarded connection is a pair
  of streams (error, data) with the same `requestID` and a `port` header; the data stream is joined to
  a TCP connection to that port on 127.0.0.1 inside the Pod's network namespace, as containerd dials.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import signal
import socket
import struct
import subprocess
import termios
import threading
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from jobqueue_devenv.nodeagent.spdyconn import Connection, Stream

log = logging.getLogger("node-agent.streaming")

EXEC_PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
"""v5 is v4 over SPDY (its stdin CLOSE signal is a WebSocket-only feature), as in the kubelet."""
PORT_FORWARD_PROTOCOLS = ("portforward.k8s.io",)
STREAM_CREATION_TIMEOUT = 30.0
STOP_GRACE = 2.0
FIRST_SIZE_SECONDS = 1.0
"""How long a command on a terminal waits for kubectl's first resize message (sent as the streams open),
so that it starts at the terminal's size, not 0x0 (`stty size` as the first command would race it)."""
READ_SIZE = 32 * 1024


class RequestError(Exception):
    """A request the kubelet would refuse before upgrading: its HTTP status and message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


# -- pure parts ----------------------------------------------------------------------------------------


def negotiate(offered: Sequence[str], supported: Sequence[str]) -> str:
    """The first protocol the client offers that we support (httpstream.Handshake), or RequestError."""
    wanted = [p.strip() for value in offered for p in value.split(",") if p.strip()]
    for protocol in wanted:
        if protocol in supported:
            return protocol
    raise RequestError(
        403,
        f"unable to upgrade: unable to negotiate protocol: client supports {wanted}, server supports {list(supported)}",
    )


@dataclass(frozen=True)
class ExecRequest:
    command: list[str]
    stdin: bool
    stdout: bool
    stderr: bool
    tty: bool

    @classmethod
    def from_query(cls, query: str) -> ExecRequest:
        """The kubelet's parameters (`input`, `output`, `error`, `tty`, `command`), checked as it does."""
        values = urllib.parse.parse_qs(query)

        def flag(name: str) -> bool:
            return (values.get(name) or [""])[0] == "1"

        tty = flag("tty")
        request = cls(values.get("command") or [], flag("input"), flag("output"), flag("error") and not tty, tty)
        if not (request.stdin or request.stdout or request.stderr):
            raise RequestError(400, "you must specify at least 1 of stdin, stdout, stderr")
        if not request.command:
            raise RequestError(400, "you must specify a command")
        return request

    @property
    def stream_count(self) -> int:
        """Streams the client opens: error, the standard ones asked for, and resize with a tty."""
        return 1 + self.stdin + self.stdout + self.stderr + self.tty


def exit_status(code: int) -> dict[str, Any]:
    """What the kubelet writes on the error stream when the command ends (a metav1.Status)."""
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {
        "metadata": {},
        "status": "Failure",
        "message": f"command terminated with non-zero exit code: exit status {code}",
        "reason": "NonZeroExitCode",
        "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]},
    }


def exit_code(returncode: int) -> int:
    """A Popen return code as a shell reports it (a signal N: 128 + N), in 0..255 as kubectl parses it."""
    return 128 - returncode if returncode < 0 else returncode & 0xFF


def parse_path(path: str) -> tuple[str, list[str]]:
    """`/exec/ns/pod[/uid]/container` -> ("exec", [ns, pod, container]); `/portForward/ns/pod[/uid]`."""
    parts = [urllib.parse.unquote(p) for p in path.strip("/").split("/")]
    kind, rest = parts[0], parts[1:]
    if kind == "exec" and len(rest) in (3, 4):
        return kind, [rest[0], rest[1], rest[-1]]
    if kind == "portForward" and len(rest) in (2, 3):
        return kind, rest[:2]
    raise RequestError(404, f"the local node agent does not serve {path}")


def terminal_size(message: bytes) -> tuple[int, int] | None:
    """A resize stream message `{"Width": w, "Height": h}` -> (rows, columns)."""
    try:
        size = json.loads(message)
        return int(size["Height"]), int(size["Width"])
    except (ValueError, KeyError, TypeError):
        return None


def forward_error(port: int, pod: str, uid: str, error: str) -> bytes:
    """The kubelet's message on a port-forward error stream (client-go prints it)."""
    message = f"error forwarding port {port} to pod {pod}, uid {uid}: {error}"
    return (json.dumps({"closeConnection": False, "message": message}) + "\n").encode()


# -- exec ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExecTarget:
    """How to run a command in one running container (see `pods.Container.exec_argv`)."""

    argv: Callable[[list[str], bool], list[str]]
    """(command, tty) -> the argv that runs it in the container."""
    env: Mapping[str, str]
    cwd: str


def _pump_out(source: IO[bytes] | int, connection: Connection, stream_id: int) -> None:
    """Copy a pipe (or a pty master) to a stream until EOF (EIO: the terminal's last process is gone)."""
    while True:
        try:
            data = os.read(source if isinstance(source, int) else source.fileno(), READ_SIZE)
        except OSError:
            data = b""
        if not data:
            return
        connection.send(stream_id, data)


def _pump_in(stream: Stream, write: Callable[[bytes], object], on_eof: Callable[[], None]) -> None:
    """Copy what the client sends on a stream to the command (or socket); its end of stream to `on_eof`."""
    while True:
        data = stream.read()
        if data is None:
            on_eof()
            return
        try:
            write(data)
        except OSError:
            return  # the command ended without reading everything


def _write_pipe(pipe: IO[bytes]) -> Callable[[bytes], None]:
    def write(data: bytes) -> None:
        pipe.write(data)
        pipe.flush()

    return write


def _set_size(fd: int, rows: int, columns: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))


@dataclass
class ExecSession:
    """One `kubectl exec`: wait for the client's streams, run the command, report its exit code."""

    connection: Connection
    request: ExecRequest
    target: ExecTarget
    streams: dict[str, Stream] = field(default_factory=dict)
    ready: threading.Event = field(default_factory=threading.Event)

    def on_stream(self, stream: Stream) -> None:
        self.streams[stream.headers.get("streamtype", "")] = stream
        if len(self.streams) >= self.request.stream_count:
            self.ready.set()

    def run(self) -> None:
        if not self.ready.wait(STREAM_CREATION_TIMEOUT):
            log.warning("exec: timed out waiting for the client to create streams")
            self.connection.close()
            return
        try:
            code = self._run_tty() if self.request.tty else self._run_pipes()
            status = exit_status(code)
        except OSError as exc:
            status = {"metadata": {}, "status": "Failure", "message": f"failed to exec in container: {exc}"}
            status["reason"] = "InternalError"
        error = self.streams.get("error")
        if error is not None:
            self.connection.send(error.stream_id, json.dumps(status).encode(), fin=True)
        for name in ("stdout", "stderr"):
            if name in self.streams:
                self.connection.finish(self.streams[name].stream_id)
        self.connection.close()

    def _start(self, stdin: Any, stdout: Any, stderr: Any) -> subprocess.Popen[bytes]:
        argv = self.target.argv(self.request.command, self.request.tty)
        return subprocess.Popen(
            argv, env=dict(self.target.env), cwd=self.target.cwd, stdin=stdin, stdout=stdout, stderr=stderr
        )

    def _wait(self, process: subprocess.Popen[bytes], pumps: list[threading.Thread]) -> int:
        """The exit code, once the output is sent; a client that goes away ends the command."""
        while process.poll() is None:
            if self.connection.closed.wait(0.2):
                _stop(process)
        for pump in pumps:
            pump.join()
        return exit_code(process.returncode)

    def _run_pipes(self) -> int:
        pipe, devnull = subprocess.PIPE, subprocess.DEVNULL
        process = self._start(
            pipe if self.request.stdin else devnull,
            pipe if self.request.stdout else devnull,
            pipe if self.request.stderr else devnull,
        )
        pumps = []
        for name, source in (("stdout", process.stdout), ("stderr", process.stderr)):
            if source is not None and name in self.streams:
                pumps.append(_thread(_pump_out, source, self.connection, self.streams[name].stream_id))
        if process.stdin is not None and "stdin" in self.streams:
            stdin = process.stdin
            _thread(_pump_in, self.streams["stdin"], _write_pipe(stdin), lambda: _close(stdin))
        code = self._wait(process, pumps)
        for source in (process.stdout, process.stderr):
            _close(source)
        return code

    def _run_tty(self) -> int:
        master, slave = os.openpty()
        if "resize" in self.streams:
            sized = threading.Event()
            _thread(_resize, self.streams["resize"], master, sized)
            sized.wait(FIRST_SIZE_SECONDS)
        try:
            process = self._start(slave, slave, slave)
        finally:
            os.close(slave)
        pumps = []
        if "stdout" in self.streams:
            pumps.append(_thread(_pump_out, master, self.connection, self.streams["stdout"].stream_id))
        if "stdin" in self.streams:
            _thread(_pump_in, self.streams["stdin"], lambda data: os.write(master, data), lambda: _write_eof(master))
        try:
            return self._wait(process, pumps)
        finally:
            os.close(master)


def _write_eof(master: int) -> None:
    with contextlib.suppress(OSError):
        os.write(master, b"\x04")  # end of input on a terminal: ^D


def _resize(stream: Stream, master: int, sized: threading.Event) -> None:
    buffered = b""
    while (data := stream.read()) is not None:
        buffered += data
        while b"}" in buffered:
            message, _, buffered = buffered.partition(b"}")
            size = terminal_size(message + b"}")
            if size is not None:
                _set_size(master, *size)
                sized.set()


def _stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM (runc exec passes it to the command), then SIGKILL."""
    with contextlib.suppress(ProcessLookupError):
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(STOP_GRACE)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            process.kill()


def _close(handle: IO[bytes] | None) -> None:
    if handle is not None:
        with contextlib.suppress(OSError):
            handle.close()


def _thread(target: Callable[..., None], *args: Any) -> threading.Thread:
    thread = threading.Thread(target=target, args=args, daemon=True)
    thread.start()
    return thread


# -- port-forward ----------------------------------------------------------------------------------


@dataclass
class PortForwardSession:
    """One `kubectl port-forward`: each (error, data) stream pair is one TCP connection to the Pod."""

    connection: Connection
    pod: str
    uid: str
    dial: Callable[[int], socket.socket]
    """Port -> a connection to it inside the Pod (`network.connect_inside`)."""
    pairs: dict[str, dict[str, Stream]] = field(default_factory=dict)

    def on_stream(self, stream: Stream) -> None:
        request = stream.headers.get("requestid", str(stream.stream_id))
        pair = self.pairs.setdefault(request, {})
        pair[stream.headers.get("streamtype", "")] = stream
        if "error" in pair and "data" in pair:
            del self.pairs[request]
            _thread(self._forward, pair["error"], pair["data"])

    def _forward(self, error: Stream, data: Stream) -> None:
        port_text = data.headers.get("port", "")
        port = int(port_text) if port_text.isdigit() else 0
        try:
            if not 0 < port < 65536:
                raise OSError(f"invalid port {port_text!r}")
            upstream = self.dial(port)
        except OSError as exc:
            why = str(exc.strerror or exc)
            message = f"dial tcp4 127.0.0.1:{port}: connect: {why[:1].lower()}{why[1:]}"  # as Go words it
            self.connection.send(error.stream_id, forward_error(port, self.pod, self.uid, message), fin=True)
            self.connection.finish(data.stream_id)
            return
        upstream.settimeout(None)
        _thread(_pump_in, data, upstream.sendall, lambda: _shutdown_write(upstream))
        try:
            while chunk := upstream.recv(READ_SIZE):
                self.connection.send(data.stream_id, chunk)
        except OSError:
            pass
        finally:
            upstream.close()
            self.connection.finish(data.stream_id)
            self.connection.finish(error.stream_id)


def _shutdown_write(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
