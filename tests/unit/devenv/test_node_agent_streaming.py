"""The node agent's exec and port-forward endpoints: SPDY frames, the kubelet's parameters and statuses,
and one exec and one port-forward session over a socket pair, played from the apiserver's side."""

from __future__ import annotations

import json
import socket
import sys
import threading
import zlib
from collections.abc import Iterator

import pytest

from jobqueue_devenv.nodeagent import spdy, streaming
from jobqueue_devenv.nodeagent.spdyconn import Connection
from jobqueue_devenv.waiting import wait_until

SPDY3_DICTIONARY_ADLER32 = 3821447106
"""zlib's checksum of the dictionary, which the Go side (moby/spdystream) checks in every stream header."""


def test_the_header_dictionary_is_spdy3s() -> None:
    assert len(spdy.DICTIONARY) == 1423
    assert zlib.adler32(spdy.DICTIONARY) == SPDY3_DICTIONARY_ADLER32


def test_frames_survive_a_round_trip_split_anywhere() -> None:
    encoder = spdy.Encoder()
    wire = (
        encoder.syn_stream(1, {"streamType": "error", "port": "6379", "requestID": "0"})
        + spdy.data_frame(1, b"hello", fin=True)
        + encoder.syn_stream(3, {"streamtype": "data"})  # the header block continues the same zlib stream
        + spdy.ping(7)
        + spdy.rst_stream(3)
        + spdy.goaway(3)
    )
    decoder = spdy.Decoder()
    frames = [frame for byte in range(len(wire)) for frame in decoder.feed(wire[byte : byte + 1])]
    assert [(f.kind, f.stream_id) for f in frames] == [
        (spdy.SYN_STREAM, 1),
        (0, 1),
        (spdy.SYN_STREAM, 3),
        (spdy.PING, 0),
        (spdy.RST_STREAM, 3),
        (spdy.GOAWAY, 3),
    ]
    assert frames[0].headers == {"streamtype": "error", "port": "6379", "requestid": "0"}  # lowercase, as Go sends
    assert (frames[1].data, frames[1].fin) == (b"hello", True)
    assert frames[3].value == 7


def test_another_spdy_version_is_refused() -> None:
    frame = bytearray(spdy.ping(1))
    frame[1] = 2
    with pytest.raises(spdy.ProtocolError, match="version 2"):
        list(spdy.Decoder().feed(bytes(frame)))


def test_protocol_negotiation_takes_the_clients_first_choice_we_support() -> None:
    offered = ["v5.channel.k8s.io", "v4.channel.k8s.io,v3.channel.k8s.io"]
    assert streaming.negotiate(offered, streaming.EXEC_PROTOCOLS) == "v5.channel.k8s.io"
    assert streaming.negotiate(["v3.channel.k8s.io, v4.channel.k8s.io"], streaming.EXEC_PROTOCOLS) == (
        "v4.channel.k8s.io"
    )
    with pytest.raises(streaming.RequestError, match="unable to negotiate protocol"):
        streaming.negotiate(["channel.k8s.io"], streaming.EXEC_PROTOCOLS)


def test_exec_parameters_are_the_kubelets() -> None:
    request = streaming.ExecRequest.from_query("command=sh&command=-c&command=echo+hi&input=1&output=1&error=1")
    assert request.command == ["sh", "-c", "echo hi"]
    assert (request.stdin, request.stdout, request.stderr, request.tty, request.stream_count) == (
        True,
        True,
        True,
        False,
        4,
    )
    terminal = streaming.ExecRequest.from_query("command=sh&output=1&error=1&tty=1")
    assert (terminal.stderr, terminal.stream_count) == (False, 3)  # a terminal has no separate stderr; resize
    with pytest.raises(streaming.RequestError, match="at least 1 of stdin, stdout, stderr"):
        streaming.ExecRequest.from_query("command=true")


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/exec/ns/pod/main", ("exec", ["ns", "pod", "main"])),
        ("/exec/ns/pod/uid-1/main", ("exec", ["ns", "pod", "main"])),
        ("/portForward/ns/pod", ("portForward", ["ns", "pod"])),
        ("/portForward/ns/pod/uid-1", ("portForward", ["ns", "pod"])),
    ],
)
def test_paths(path: str, expected: tuple[str, list[str]]) -> None:
    assert streaming.parse_path(path) == expected


def test_an_unknown_path_is_404() -> None:
    with pytest.raises(streaming.RequestError) as refused:
        streaming.parse_path("/attach/ns/pod/main")
    assert refused.value.status == 404


def test_the_exit_status_is_the_kubelets_so_kubectl_exits_with_the_code() -> None:
    assert streaming.exit_status(0) == {"metadata": {}, "status": "Success"}
    failed = streaming.exit_status(3)
    assert (failed["status"], failed["reason"]) == ("Failure", "NonZeroExitCode")
    assert failed["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert streaming.exit_code(-9) == 137  # killed by SIGKILL, as a shell says it


def test_terminal_sizes() -> None:
    assert streaming.terminal_size(b'{"Width":120,"Height":40}') == (40, 120)
    assert streaming.terminal_size(b"{}") is None


class Peer:
    """The apiserver's side of one SPDY connection: opens streams, collects what the agent sends."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.encoder = spdy.Encoder()
        self.data: dict[int, bytes] = {}
        self.finished: set[int] = set()
        self.replied: set[int] = set()
        self.ended = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        decoder = spdy.Decoder()
        while chunk := self.sock.recv(65536):
            for frame in decoder.feed(chunk):
                if frame.kind == spdy.SYN_REPLY:
                    self.replied.add(frame.stream_id)
                elif frame.kind == 0:
                    self.data[frame.stream_id] = self.data.get(frame.stream_id, b"") + frame.data
                    if frame.fin:
                        self.finished.add(frame.stream_id)
                elif frame.kind == spdy.GOAWAY:
                    self.ended.set()
        self.ended.set()

    def open(self, stream_id: int, headers: dict[str, str]) -> None:
        self.sock.sendall(self.encoder.syn_stream(stream_id, headers))

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        self.sock.sendall(spdy.data_frame(stream_id, data, fin))


@pytest.fixture
def sockets() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, theirs = socket.socketpair()
    yield ours, theirs
    ours.close()
    theirs.close()


def _serve_exec(agent_side: socket.socket, request: streaming.ExecRequest) -> Connection:
    connection = Connection(agent_side)
    target = streaming.ExecTarget(lambda argv, tty: argv, {"PATH": "/usr/bin:/bin"}, "/")
    session = streaming.ExecSession(connection, request, target)
    connection.on_stream = session.on_stream
    threading.Thread(target=connection.serve, daemon=True).start()
    threading.Thread(target=session.run, daemon=True).start()
    return connection


def test_exec_streams_stdin_stdout_stderr_and_the_exit_code(sockets: tuple[socket.socket, socket.socket]) -> None:
    agent_side, apiserver_side = sockets
    script = "import sys; data = sys.stdin.read(); print(data.upper()); print('oops', file=sys.stderr); sys.exit(3)"
    _serve_exec(agent_side, streaming.ExecRequest([sys.executable, "-c", script], True, True, True, False))
    peer = Peer(apiserver_side)
    for stream_id, kind in ((1, "error"), (3, "stdin"), (5, "stdout"), (7, "stderr")):
        peer.open(stream_id, {"streamType": kind})
    peer.send(3, b"piped ")
    peer.send(3, b"input", fin=True)  # the client closes stdin: the command reads to its end
    assert peer.ended.wait(30), "the agent did not end the connection"
    assert peer.replied == {1, 3, 5, 7}
    assert peer.data[5] == b"PIPED INPUT\n"
    assert peer.data[7] == b"oops\n"
    status = json.loads(peer.data[1])
    assert status["reason"] == "NonZeroExitCode"
    assert status["details"]["causes"] == [{"reason": "ExitCode", "message": "3"}]
    assert {1, 5, 7} <= peer.finished


def test_exec_success_is_reported_as_success(sockets: tuple[socket.socket, socket.socket]) -> None:
    agent_side, apiserver_side = sockets
    _serve_exec(agent_side, streaming.ExecRequest(["echo", "hi"], False, True, True, False))
    peer = Peer(apiserver_side)
    for stream_id, kind in ((1, "error"), (3, "stdout"), (5, "stderr")):
        peer.open(stream_id, {"streamType": kind})
    assert peer.ended.wait(30)
    assert peer.data[3] == b"hi\n"
    assert json.loads(peer.data[1])["status"] == "Success"


def test_port_forward_joins_a_stream_pair_to_a_tcp_connection(sockets: tuple[socket.socket, socket.socket]) -> None:
    agent_side, apiserver_side = sockets
    server = socket.create_server(("127.0.0.1", 0))
    port = server.getsockname()[1]

    def echo_once() -> None:
        conn, _ = server.accept()
        with conn:
            conn.sendall(b"echo:" + conn.recv(100))

    threading.Thread(target=echo_once, daemon=True).start()
    connection = Connection(agent_side)
    connection.on_stream = streaming.PortForwardSession(
        connection, "pod", "uid", lambda port: socket.create_connection(("127.0.0.1", port), timeout=30)
    ).on_stream
    threading.Thread(target=connection.serve, daemon=True).start()
    peer = Peer(apiserver_side)
    headers = {"port": str(port), "requestID": "0"}
    peer.open(1, {**headers, "streamType": "error"})
    peer.open(3, {**headers, "streamType": "data"})
    peer.send(3, b"ping")

    wait_until(lambda: 3 in peer.finished, timeout=30, what="the forwarded connection to end")
    assert peer.data[3] == b"echo:ping"
    assert peer.data.get(1, b"") == b""  # no error
    server.close()
    refused = {"port": str(port), "requestID": "1"}  # nothing listens there any more
    peer.open(5, {**refused, "streamType": "error"})
    peer.open(7, {**refused, "streamType": "data"})
    wait_until(lambda: 5 in peer.finished, timeout=30, what="the error stream to end")
    assert (
        f"error forwarding port {port} to pod pod, uid uid: dial tcp4 127.0.0.1:{port}: connect: connection refused"
        in (peer.data[5].decode())
    )
    connection.close()
