"""The kubelet's port, which the apiserver proxies `kubectl logs`, `exec` and `port-forward` to.

`GET /containerLogs/<namespace>/<pod>/<container>` with the kubelet's query parameters: `follow`
(stream until the run ends), `previous` (the run before the current one), `tailLines`, `limitBytes`.
`timestamps` and `sinceSeconds` are accepted and ignored: the log files hold the output only.
HTTPS on 127.0.0.1 with the cluster CA's serving certificate; only clients with a certificate of the
cluster CA (the apiserver's kubelet client certificate) are served, as `--client-ca-file` does for a
kubelet. The Node's `status.daemonEndpoints.kubeletEndpoint.Port` tells the apiserver where it is.
`/exec/...` and `/portForward/...` are upgraded to SPDY and served by `streaming`.
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from jobqueue_devenv.nodeagent import spdyconn, streaming

log = logging.getLogger("node-agent.kubelet-api")

FOLLOW_POLL = 0.2


@dataclass(frozen=True)
class LogTarget:
    """The runs of one container, or why there are none to show."""

    runs: list[Path]
    running: Callable[[Path], bool]
    """Is the run that writes this file still going (then `follow` keeps streaming)?"""
    error: str = ""
    status: int = 200


Find = Callable[[str, str, str], LogTarget]
"""(namespace, pod, container) -> its logs."""
FindExec = Callable[[str, str, str], streaming.ExecTarget]
"""(namespace, pod, container) -> how to run a command in it; raises streaming.RequestError."""
FindPod = Callable[[str, str], tuple[str, Callable[[int], socket.socket]]]
"""(namespace, pod) -> (its uid, port -> a connection to it in the Pod); raises streaming.RequestError."""


def tail(data: bytes, lines: int) -> bytes:
    """The last `lines` lines of `data` (a last line without a newline counts)."""
    if lines <= 0:
        return b""
    parts = data.splitlines(keepends=True)
    return b"".join(parts[-lines:])


def choose_run(target: LogTarget, previous: bool, pod: str, container: str) -> tuple[Path | None, str]:
    """The file `kubectl logs` (or `--previous`) shows, or the kubelet's message why none."""
    if previous:
        if len(target.runs) < 2:
            return None, f'previous terminated container "{container}" in pod "{pod}" not found'
        return target.runs[-2], ""
    if not target.runs:
        return None, f'container "{container}" in pod "{pod}" is waiting to start: ContainerCreating'
    return target.runs[-1], ""


class _Handler(BaseHTTPRequestHandler):
    server: KubeletServer
    rbufsize = 0
    """Unbuffered: after an upgrade the socket carries SPDY, and no byte of it may sit in a read buffer."""

    def log_message(self, format: str, *args: object) -> None:
        log.debug(format, *args)

    def _error(self, status: int, message: str) -> None:
        body = message.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        self._upgrade()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path.startswith(("/exec/", "/portForward/")):
            self._upgrade()
            return
        if url.path == "/healthz":
            self._error(200, "ok")
            return
        parts = url.path.strip("/").split("/")
        if len(parts) != 4 or parts[0] != "containerLogs":
            self._error(404, f"the local node agent serves /containerLogs, /exec and /portForward, not {url.path}")
            return
        _, namespace, pod, container = (urllib.parse.unquote(p) for p in parts)
        query = urllib.parse.parse_qs(url.query)

        def flag(name: str) -> bool:
            return (query.get(name) or ["false"])[0].lower() in ("true", "1")

        def number(name: str) -> int | None:
            value = (query.get(name) or [""])[0]
            return int(value) if value.lstrip("-").isdigit() else None

        target = self.server.find(namespace, pod, container)
        if target.error:
            self._error(target.status, target.error)
            return
        path, why = choose_run(target, flag("previous"), pod, container)
        if path is None:
            self._error(400, why)
            return
        try:
            self._stream(path, target, flag("follow"), number("tailLines"), number("limitBytes"))
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            return  # the client (kubectl, through the apiserver) went away: stop following

    def _stream(self, path: Path, target: LogTarget, follow: bool, lines: int | None, limit: int | None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Connection", "close")
        self.end_headers()
        left = limit if limit is not None and limit > 0 else None
        with path.open("rb") as handle:
            data = handle.read()
            if lines is not None and lines >= 0:
                data = tail(data, lines)
            left = self._write(data, left)
            while follow and left != 0:
                chunk = handle.read()
                if chunk:
                    left = self._write(chunk, left)
                elif not target.running(path):
                    left = self._write(handle.read(), left)  # what the run wrote as it ended
                    break
                else:
                    time.sleep(FOLLOW_POLL)

    def _write(self, data: bytes, left: int | None) -> int | None:
        if left is not None:
            data = data[:left]
            left -= len(data)
        if data:
            self.wfile.write(data)
            self.wfile.flush()
        return left

    def _upgrade(self) -> None:
        """`kubectl exec` and `port-forward`: check the request, upgrade to SPDY, serve the streams."""
        url = urllib.parse.urlsplit(self.path)
        offered = self.headers.get_all("X-Stream-Protocol-Version") or []
        try:
            kind, names = streaming.parse_path(url.path)
            if "spdy/3.1" not in (self.headers.get("Upgrade") or "").lower():
                raise streaming.RequestError(400, "unable to upgrade: missing upgrade headers in request (SPDY/3.1)")
            if kind == "exec":
                request = streaming.ExecRequest.from_query(url.query)
                protocol = streaming.negotiate(offered, streaming.EXEC_PROTOCOLS)
                target = self.server.find_exec(*names)
            else:
                protocol = streaming.negotiate(offered, streaming.PORT_FORWARD_PROTOCOLS)
                uid, dial = self.server.find_pod(*names)
        except streaming.RequestError as exc:
            self._error(exc.status, str(exc))
            return
        self.close_connection = True
        self.send_response(101)
        self.send_header("Connection", "Upgrade")
        self.send_header("Upgrade", "SPDY/3.1")
        self.send_header("X-Stream-Protocol-Version", protocol)
        self.end_headers()
        connection = spdyconn.Connection(self.connection)
        if kind == "exec":
            session = streaming.ExecSession(connection, request, target)
            connection.on_stream = session.on_stream
            threading.Thread(target=session.run, name="exec", daemon=True).start()
        else:
            connection.on_stream = streaming.PortForwardSession(connection, names[1], uid, dial).on_stream
        connection.serve()


def _not_served(*names: str) -> Any:
    raise streaming.RequestError(404, "the local node agent was started without exec and port-forward")


class KubeletServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(
        self,
        find: Find,
        cert: Path,
        key: Path,
        client_ca: Path,
        host: str = "127.0.0.1",
        find_exec: FindExec = _not_served,
        find_pod: FindPod = _not_served,
    ) -> None:
        super().__init__((host, 0), _Handler)
        self.find = find
        self.find_exec = find_exec
        self.find_pod = find_pod
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(cert, key)
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_REQUIRED
        self.socket = context.wrap_socket(self.socket, server_side=True)

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    def start(self) -> None:
        threading.Thread(target=self.serve_forever, name="kubelet-api", daemon=True).start()
