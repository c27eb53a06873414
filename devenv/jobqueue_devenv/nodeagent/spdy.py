"""SPDY/3.1 frames, the multiplexing under the kubelet's exec and port-forward endpoints (pure).

The kube-apiserver reaches a kubelet's `/exec` and `/portForward` with `Upgrade: SPDY/3.1` (it
translates kubectl's WebSockets itself, since this node does not declare `ExtendWebSocketsToKubelet`);
kubectl's port-forward tunnels the same SPDY frames. No maintained Python SPDY library exists, and the
part Kubernetes uses is small: data frames, SYN_STREAM/SYN_REPLY with zlib-compressed headers,
RST_STREAM, PING, GOAWAY (SETTINGS and WINDOW_UPDATE are read and ignored: the Go side, moby/spdystream,
does no flow control). Frame layout as in the SPDY/3.1 draft and moby/spdystream's `spdy` package.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

VERSION = 3
FLAG_FIN = 0x01

SYN_STREAM = 1
SYN_REPLY = 2
RST_STREAM = 3
SETTINGS = 4
PING = 6
GOAWAY = 7
HEADERS = 8
WINDOW_UPDATE = 9

RST_CANCEL = 5
MAX_DATA = 32 * 1024
"""Bytes of payload per data frame we send (the format allows 16 MiB; small frames keep streams fair)."""

_WORDS = (
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
)
_TAIL = (
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505"
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request401 Unauthorized"
    "403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented503 Service Unavailable"
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT"
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,text/plain,"
    "text/javascript,publicprivatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0."
)
DICTIONARY = b"".join(struct.pack(">I", len(w)) + w.encode() for w in _WORDS) + _TAIL.encode()
"""SPDY/3's zlib dictionary for header blocks (both directions, one zlib stream per direction)."""


@dataclass(frozen=True)
class Frame:
    """One frame read: `kind` 0 is data, else the control frame type."""

    kind: int
    stream_id: int
    flags: int
    data: bytes = b""
    headers: Mapping[str, str] = field(default_factory=dict)
    """SYN_STREAM, SYN_REPLY, HEADERS: names lowercase, several values joined with NUL as sent."""
    value: int = 0
    """PING: its id; RST_STREAM and GOAWAY: the status code; WINDOW_UPDATE: the delta."""

    @property
    def fin(self) -> bool:
        return bool(self.flags & FLAG_FIN)


class ProtocolError(Exception):
    """The peer sent something that is not SPDY/3."""


def _control(kind: int, flags: int, payload: bytes) -> bytes:
    return struct.pack(">HHI", 0x8000 | VERSION, kind, (flags << 24) | len(payload)) + payload


def data_frame(stream_id: int, data: bytes, fin: bool = False) -> bytes:
    return struct.pack(">II", stream_id & 0x7FFFFFFF, ((FLAG_FIN if fin else 0) << 24) | len(data)) + data


def header_block(headers: Mapping[str, str]) -> bytes:
    """The uncompressed name/value block: a count, then length-prefixed lowercase names and values."""
    out = [struct.pack(">I", len(headers))]
    for name, value in headers.items():
        encoded_name, encoded_value = name.lower().encode(), value.encode()
        out += [struct.pack(">I", len(encoded_name)), encoded_name]
        out += [struct.pack(">I", len(encoded_value)), encoded_value]
    return b"".join(out)


def parse_header_block(block: bytes) -> dict[str, str]:
    try:
        (count,) = struct.unpack_from(">I", block, 0)
        offset, headers = 4, {}
        for _ in range(count):
            (size,) = struct.unpack_from(">I", block, offset)
            name = block[offset + 4 : offset + 4 + size].decode()
            offset += 4 + size
            (size,) = struct.unpack_from(">I", block, offset)
            headers[name] = block[offset + 4 : offset + 4 + size].decode()
            offset += 4 + size
    except (struct.error, UnicodeDecodeError) as exc:
        raise ProtocolError(f"bad header block: {exc}") from exc
    return headers


class Encoder:
    """Frames we send; header blocks share one zlib stream, so frames must be sent in the order made."""

    def __init__(self) -> None:
        self._deflate = zlib.compressobj(9, zlib.DEFLATED, 15, 8, zlib.Z_DEFAULT_STRATEGY, DICTIONARY)

    def _headers(self, headers: Mapping[str, str]) -> bytes:
        return self._deflate.compress(header_block(headers)) + self._deflate.flush(zlib.Z_SYNC_FLUSH)

    def syn_stream(self, stream_id: int, headers: Mapping[str, str], fin: bool = False) -> bytes:
        """A new stream (clients open odd ids; used by tests playing the apiserver)."""
        body = struct.pack(">IIBB", stream_id, 0, 0, 0) + self._headers(headers)
        return _control(SYN_STREAM, FLAG_FIN if fin else 0, body)

    def syn_reply(self, stream_id: int, headers: Mapping[str, str] | None = None) -> bytes:
        return _control(SYN_REPLY, 0, struct.pack(">I", stream_id) + self._headers(headers or {}))


def rst_stream(stream_id: int, status: int = RST_CANCEL) -> bytes:
    return _control(RST_STREAM, 0, struct.pack(">II", stream_id, status))


def ping(ping_id: int) -> bytes:
    return _control(PING, 0, struct.pack(">I", ping_id))


def goaway(last_stream_id: int) -> bytes:
    return _control(GOAWAY, 0, struct.pack(">II", last_stream_id, 0))


class Decoder:
    """Frames out of a byte stream: `feed` bytes as they arrive, get every frame they complete."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._inflate = zlib.decompressobj(zdict=DICTIONARY)

    def _headers(self, block: bytes) -> dict[str, str]:
        try:
            return parse_header_block(self._inflate.decompress(block))
        except zlib.error as exc:
            raise ProtocolError(f"bad compressed headers: {exc}") from exc

    def feed(self, data: bytes) -> Iterator[Frame]:
        self._buffer += data
        while len(self._buffer) >= 8:
            first, second = struct.unpack_from(">II", self._buffer, 0)
            length = second & 0xFFFFFF
            if len(self._buffer) < 8 + length:
                return
            payload = bytes(self._buffer[8 : 8 + length])
            del self._buffer[: 8 + length]
            flags = second >> 24
            if not first & 0x80000000:
                yield Frame(0, first & 0x7FFFFFFF, flags, data=payload)
                continue
            version, kind = (first >> 16) & 0x7FFF, first & 0xFFFF
            if version != VERSION:
                raise ProtocolError(f"SPDY version {version}, expected {VERSION}")
            yield self._control(kind, flags, payload)

    def _control(self, kind: int, flags: int, payload: bytes) -> Frame:
        def word(offset: int) -> int:
            try:
                return int(struct.unpack_from(">I", payload, offset)[0]) & 0x7FFFFFFF
            except struct.error as exc:
                raise ProtocolError(f"control frame {kind} too short") from exc

        if kind == SYN_STREAM:
            return Frame(kind, word(0), flags, headers=self._headers(payload[10:]))
        if kind in (SYN_REPLY, HEADERS):
            return Frame(kind, word(0), flags, headers=self._headers(payload[4:]))
        if kind in (RST_STREAM, WINDOW_UPDATE):
            return Frame(kind, word(0), flags, value=word(4))
        if kind == GOAWAY:
            return Frame(kind, word(0), flags, value=word(4) if len(payload) >= 8 else 0)
        if kind == PING:
            return Frame(kind, 0, flags, value=int(struct.unpack_from(">I", payload, 0)[0]))
        return Frame(kind, 0, flags, data=payload)  # SETTINGS and anything newer: read and ignored
