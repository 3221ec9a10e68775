"""The dispatcher's HTTP/1.1 client: keep-alive POSTs to a sink, one connection per thread and origin.

Written out on a socket rather than taken from ``http.client``: per event the dispatcher sends
one small POST and reads one small reply, and ``http.client`` spends two to three times the CPU
on it (its header parsing goes through the ``email`` package); bench/sink_client.py measures it.
What a sink may answer is all read: a ``Content-Length`` body, a chunked one, one that ends
with the connection, and no body at all (HEAD-less POST: 1xx interim answers are skipped, 204
and 304 carry none). ``timeout_s`` bounds the whole exchange, as KafkaSource's
``delivery.timeout`` does. A kept-alive connection the sink closed meanwhile gets one fresh
try, as ``http.client`` users do; the sinks are idempotent, as KafkaSource requires.
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
import time
import urllib.parse
from dataclasses import dataclass

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 32 * 1024 * 1024
_NO_BODY = frozenset({204, 304})


class SinkProtocolError(OSError):
    """The sink's answer is not HTTP/1.x the client can read; the message says what was wrong."""


class StaleConnection(OSError):
    """A kept-alive connection ended before the first byte of an answer."""


@dataclass(frozen=True)
class Reply:
    """An HTTP response from a sink."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


class _Connection:
    def __init__(self, scheme: str, host: str, port: int, timeout_s: float) -> None:
        raw = socket.create_connection((host, port), timeout=timeout_s)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if scheme == "https":
            raw = ssl.create_default_context().wrap_socket(raw, server_hostname=host)
        self.socket = raw
        self.buffer = b""
        self.used = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()

    def fill(self, deadline: float) -> bool:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the sink did not answer in time")
        self.socket.settimeout(remaining)
        chunk = self.socket.recv(65536)
        if not chunk:
            return False
        self.buffer += chunk
        return True

    def read_until(self, marker: bytes, limit: int, deadline: float, what: str) -> bytes:
        while True:
            index = self.buffer.find(marker)
            if index >= 0:
                found, self.buffer = self.buffer[:index], self.buffer[index + len(marker):]
                return found
            if len(self.buffer) > limit:
                raise SinkProtocolError(f"{what} longer than {limit} bytes")
            if not self.fill(deadline):
                raise SinkProtocolError(f"the sink closed the connection in the middle of the {what}")

    def read_exactly(self, count: int, deadline: float) -> bytes:
        while len(self.buffer) < count:
            if not self.fill(deadline):
                raise SinkProtocolError("the sink closed the connection in the middle of the body")
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data

    def read_to_end(self, deadline: float) -> bytes:
        while self.fill(deadline):
            if len(self.buffer) > MAX_BODY_BYTES:
                raise SinkProtocolError(f"body longer than {MAX_BODY_BYTES} bytes")
        data, self.buffer = self.buffer, b""
        return data


def _request_head(path: str, host: str, headers: dict[str, str], length: int) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"host: {host}"]
    for name, value in headers.items():
        if name.lower() in ("host", "content-length", "transfer-encoding", "connection"):
            continue
        if any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            raise ValueError(f"header {name!r} cannot be sent: it holds a line break or a colon in its name")
        lines.append(f"{name}: {value}")
    lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _read_reply(connection: _Connection, deadline: float) -> tuple[Reply, bool]:
    """The reply and whether the connection may be kept."""
    while True:
        if not connection.buffer and not connection.fill(deadline):
            raise StaleConnection("the sink closed the connection before answering")
        head = connection.read_until(b"\r\n\r\n", MAX_HEAD_BYTES, deadline, "response head")
        status_line, *header_lines = head.decode("latin-1").split("\r\n")
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            raise SinkProtocolError(f"not an HTTP/1.x status line: {status_line[:80]!r}")
        status = int(parts[1])
        headers: list[tuple[str, str]] = []
        for line in header_lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise SinkProtocolError(f"not a header line: {line[:80]!r}")
            headers.append((name.strip(), value.strip()))
        if 100 <= status < 200:
            continue  # an interim answer (100 Continue, 103 Early Hints): the real one follows
        break
    fields = {name.lower(): value for name, value in headers}
    keep = parts[0] != "HTTP/1.0" and fields.get("connection", "").lower() != "close"
    if status in _NO_BODY:
        return Reply(status, tuple(headers), b""), keep
    if "chunked" in fields.get("transfer-encoding", "").lower():
        return Reply(status, tuple(headers), _read_chunked(connection, deadline)), keep
    length = fields.get("content-length")
    if length is not None:
        if not length.isdigit():
            raise SinkProtocolError(f"bad content-length {length!r}")
        if int(length) > MAX_BODY_BYTES:
            raise SinkProtocolError(f"body longer than {MAX_BODY_BYTES} bytes")
        return Reply(status, tuple(headers), connection.read_exactly(int(length), deadline)), keep
    return Reply(status, tuple(headers), connection.read_to_end(deadline)), False


def _read_chunked(connection: _Connection, deadline: float) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        line = connection.read_until(b"\r\n", 1024, deadline, "chunk size line")
        text = line.split(b";", 1)[0].strip()
        try:
            count = int(text, 16)
        except ValueError:
            raise SinkProtocolError(f"bad chunk size {text[:20]!r}") from None
        if count == 0:
            while connection.read_until(b"\r\n", MAX_HEAD_BYTES, deadline, "trailer"):
                pass  # trailers are read and dropped
            return b"".join(chunks)
        size += count
        if size > MAX_BODY_BYTES:
            raise SinkProtocolError(f"body longer than {MAX_BODY_BYTES} bytes")
        chunks.append(connection.read_exactly(count, deadline))
        if connection.read_exactly(2, deadline) != b"\r\n":
            raise SinkProtocolError("a chunk does not end with CRLF")


class SinkClient:
    """HTTP/1.1 keep-alive connections, one per worker thread and origin."""

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self._local = threading.local()

    def post(self, url: str, headers: dict[str, str], body: bytes) -> Reply:
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https"):
            raise ValueError(f"sink URL must be http or https, got {url!r}")
        host = parsed.hostname or "127.0.0.1"
        port = parsed.port or (443 if parsed.scheme == "https" else 80)
        origin = (parsed.scheme, host, port)
        path = (parsed.path or "/") + (f"?{parsed.query}" if parsed.query else "")
        request = _request_head(path, parsed.netloc or host, headers, len(body)) + body
        connections: dict[tuple[str, str, int], _Connection] = self._local.__dict__.setdefault("connections", {})
        deadline = time.monotonic() + self.timeout_s
        for attempt in (1, 2):
            connection = connections.pop(origin, None)
            if connection is None:
                connection = _Connection(parsed.scheme, host, port, max(0.001, deadline - time.monotonic()))
            reused = connection.used
            try:
                connection.socket.sendall(request)
                reply, keep = _read_reply(connection, deadline)
            except (StaleConnection, BrokenPipeError, ConnectionResetError):
                connection.close()
                if reused and attempt == 1:
                    continue  # a kept-alive connection the sink closed meanwhile: one fresh try
                raise
            except BaseException:
                connection.close()
                raise
            if keep:
                connection.used = True
                connections[origin] = connection
            else:
                connection.close()
            return reply
        raise AssertionError("unreachable")
