"""One upgraded SPDY connection: its streams, read and written by a single I/O thread.

One thread owns the (TLS) socket: it waits for bytes from the peer or for frames to send, so no two
threads ever use the TLS connection at once (OpenSSL does not allow that). Other threads (a process's
output pumps, a port-forward's socket) queue frames with `send` and read a stream's bytes from its
inbox; the I/O thread replies to each new stream at once, as spdystream's server side does.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import select
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from jobqueue_devenv.nodeagent import spdy

log = logging.getLogger("node-agent.spdy")

READ_TIMEOUT = 0.5
WAIT_SECONDS = 1.0


@dataclass
class Stream:
    """A stream the peer opened: its headers and what it sent (`None` in the inbox: it finished)."""

    stream_id: int
    headers: Mapping[str, str]
    inbox: queue.Queue[bytes | None] = field(default_factory=queue.Queue)
    remote_done: bool = False

    def read(self, timeout: float | None = None) -> bytes | None:
        """The next bytes the peer sent, or None once it finished (or reset) the stream."""
        return self.inbox.get(timeout=timeout)


class Connection:
    """Serve one SPDY connection in the calling thread until the peer leaves or `close` is called."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.on_stream: Callable[[Stream], None] = lambda stream: None
        """Told of each stream the peer opens (in the I/O thread: it must not block)."""
        self.streams: dict[int, Stream] = {}
        self.encoder = spdy.Encoder()
        self.decoder = spdy.Decoder()
        self.outbox: list[bytes] = []
        self.lock = threading.Lock()
        self.closing = False
        self.closed = threading.Event()
        self.last_stream = 0
        self._wake_read, self._wake_write = socket.socketpair()

    # -- called from any thread ---------------------------------------------------------------------

    def _queue(self, frame: bytes) -> None:
        with self.lock:
            self.outbox.append(frame)
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    def send(self, stream_id: int, data: bytes, fin: bool = False) -> None:
        """Data on a stream, cut into frames; `fin` closes our side of it."""
        for start in range(0, len(data), spdy.MAX_DATA):
            self._queue(spdy.data_frame(stream_id, data[start : start + spdy.MAX_DATA]))
        if fin:
            self._queue(spdy.data_frame(stream_id, b"", fin=True))

    def finish(self, stream_id: int) -> None:
        self._queue(spdy.data_frame(stream_id, b"", fin=True))

    def reset(self, stream_id: int) -> None:
        self._queue(spdy.rst_stream(stream_id))

    def close(self) -> None:
        """Send what is queued, then GOAWAY, and end the connection (from any thread)."""
        with self.lock:
            self.closing = True
        with contextlib.suppress(OSError):
            self._wake_write.send(b"x")

    # -- the I/O thread -----------------------------------------------------------------------------

    def serve(self) -> None:
        try:
            self._loop()
        except (OSError, spdy.ProtocolError) as exc:
            log.debug("connection ended: %s", exc)
        finally:
            for stream in self.streams.values():
                stream.inbox.put(None)
            self.closed.set()
            with contextlib.suppress(OSError):
                self.sock.close()
            self._wake_read.close()
            self._wake_write.close()

    def _flush(self) -> bool:
        """Write every queued frame; True when the connection is to end now."""
        with self.lock:
            frames, self.outbox = self.outbox, []
            closing = self.closing
        if closing:
            frames.append(spdy.goaway(self.last_stream))
        if frames:
            self.sock.settimeout(None)
            self.sock.sendall(b"".join(frames))
        return closing

    def _loop(self) -> None:
        while True:
            if self._flush():
                return
            pending = isinstance(self.sock, ssl.SSLSocket) and self.sock.pending() > 0
            if not pending:
                ready, _, _ = select.select([self.sock, self._wake_read], [], [], WAIT_SECONDS)
                if self._wake_read in ready:
                    self._wake_read.recv(4096)
                if self.sock not in ready:
                    continue
            self.sock.settimeout(READ_TIMEOUT)
            try:
                data = self.sock.recv(65536)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            if not data:
                return
            for frame in self.decoder.feed(data):
                self._handle(frame)

    def _handle(self, frame: spdy.Frame) -> None:
        if frame.kind == 0:
            stream = self.streams.get(frame.stream_id)
            if stream is None:
                return
            if frame.data:
                stream.inbox.put(frame.data)
            if frame.fin:
                self._remote_done(stream)
        elif frame.kind == spdy.SYN_STREAM:
            stream = Stream(frame.stream_id, frame.headers)
            self.streams[frame.stream_id] = stream
            self.last_stream = max(self.last_stream, frame.stream_id)
            with self.lock:
                self.outbox.append(self.encoder.syn_reply(frame.stream_id))
            if frame.fin:
                self._remote_done(stream)
            self.on_stream(stream)
        elif frame.kind == spdy.RST_STREAM:
            stream = self.streams.pop(frame.stream_id, None)
            if stream is not None:
                self._remote_done(stream)
        elif frame.kind == spdy.PING:
            self._queue(spdy.ping(frame.value))  # echo the peer's ping
        elif frame.kind == spdy.GOAWAY:
            self.close()

    @staticmethod
    def _remote_done(stream: Stream) -> None:
        if not stream.remote_done:
            stream.remote_done = True
            stream.inbox.put(None)
