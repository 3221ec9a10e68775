"""The dispatcher's HTTP client against scripted sinks on real sockets, and against uvicorn."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local.kafkasource.sink_client import SinkClient, SinkProtocolError
from tests.integration.functions.ff_support import REPO, ff_server

Answer = Callable[[socket.socket, bytes], bool]  # writes the answer; False closes the connection


class ScriptedSink:
    """Accepts connections and answers each request with the next of ``answers``."""

    def __init__(self, answers: list[Answer]) -> None:
        self.answers = list(answers)
        self.requests: list[bytes] = []
        self.connections = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/sink?x=1"

    def _serve(self) -> None:
        while self.answers:
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            with connection:
                buffer = b""
                while self.answers:
                    while b"\r\n\r\n" not in buffer:
                        chunk = connection.recv(65536)
                        if not chunk:
                            break
                        buffer += chunk
                    if b"\r\n\r\n" not in buffer:
                        break
                    head, _, rest = buffer.partition(b"\r\n\r\n")
                    length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                      if line.lower().startswith(b"content-length")))
                    while len(rest) < length:
                        rest += connection.recv(65536)
                    self.requests.append(head + b"\r\n\r\n" + rest[:length])
                    buffer = rest[length:]
                    if not self.answers.pop(0)(connection, head):
                        break

    def close(self) -> None:
        self.listener.close()


def send(raw: bytes, keep: bool = True) -> Answer:
    def answer(connection: socket.socket, _head: bytes) -> bool:
        connection.sendall(raw)
        return keep

    return answer


@pytest.fixture
def sink(request: pytest.FixtureRequest) -> Iterator[ScriptedSink]:
    server = ScriptedSink(request.param)
    yield server
    server.close()


OK = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\": 1.0}"


@pytest.mark.parametrize("sink", [[send(OK)] * 3], indirect=True)
def test_requests_share_one_kept_alive_connection(sink: ScriptedSink) -> None:
    client = SinkClient(5)
    replies = [client.post(sink.url, {"ce-id": f"e{i}", "content-type": "application/json"}, b"{}") for i in range(3)]
    assert [(r.status, r.body) for r in replies] == [(200, b'{"ok": 1.0}')] * 3
    assert ("content-type", "application/json") in replies[0].headers
    assert sink.connections == 1
    head = sink.requests[0].split(b"\r\n")
    assert head[0] == b"POST /sink?x=1 HTTP/1.1" and b"ce-id: e0" in head and b"content-length: 2" in head


CHUNKED = (b"HTTP/1.1 503 Service Unavailable\r\ntransfer-encoding: chunked\r\n\r\n"
           b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nx-trailer: t\r\n\r\n")


@pytest.mark.parametrize("sink", [[send(CHUNKED), send(OK)]], indirect=True)
def test_a_chunked_body_is_read_whole_and_the_connection_kept(sink: ScriptedSink) -> None:
    client = SinkClient(5)
    first = client.post(sink.url, {}, b"x")
    assert (first.status, first.body) == (503, b"hello world")
    assert client.post(sink.url, {}, b"y").status == 200
    assert sink.connections == 1


@pytest.mark.parametrize("sink", [[send(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"), send(OK)]],
                         indirect=True)
def test_interim_answers_are_skipped_and_204_has_no_body(sink: ScriptedSink) -> None:
    client = SinkClient(5)
    reply = client.post(sink.url, {}, b"x")
    assert (reply.status, reply.body) == (204, b"")
    assert client.post(sink.url, {}, b"y").status == 200


@pytest.mark.parametrize("sink", [[send(b"HTTP/1.0 400 Bad Request\r\n\r\nno length, ends with the connection",
                                        keep=False), send(OK)]], indirect=True)
def test_a_body_that_ends_with_the_connection(sink: ScriptedSink) -> None:
    client = SinkClient(5)
    reply = client.post(sink.url, {}, b"x")
    assert (reply.status, reply.body) == (400, b"no length, ends with the connection")
    assert client.post(sink.url, {}, b"y").status == 200
    assert sink.connections == 2


@pytest.mark.parametrize("sink", [[send(OK, keep=False), send(OK)]], indirect=True)
def test_a_kept_connection_the_sink_closed_gets_one_fresh_try(sink: ScriptedSink) -> None:
    client = SinkClient(5)
    assert client.post(sink.url, {}, b"x").status == 200  # the sink closes after answering
    time.sleep(0.05)
    assert client.post(sink.url, {}, b"y").status == 200
    assert sink.connections == 2 and len(sink.requests) == 2


def never(_connection: socket.socket, _head: bytes) -> bool:
    time.sleep(1.5)
    return False


@pytest.mark.parametrize("sink", [[never]], indirect=True)
def test_the_timeout_bounds_the_whole_exchange(sink: ScriptedSink) -> None:
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        SinkClient(0.3).post(sink.url, {}, b"x")
    assert time.monotonic() - started < 1.0


@pytest.mark.parametrize("sink", [[send(b"SPDY/9 200 what\r\n\r\n")], [send(b"HTTP/1.1 200 OK\r\nbroken\r\n\r\n")],
                                  [send(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n")],
                                  [send(b"HTTP/1.1 200 OK\r\ncontent-length: 10\r\n\r\nshort", keep=False)]],
                         indirect=True)
def test_unreadable_answers_are_protocol_errors(sink: ScriptedSink) -> None:
    with pytest.raises(SinkProtocolError):
        SinkClient(2).post(sink.url, {}, b"x")


def test_headers_that_would_split_the_request_are_refused() -> None:
    with pytest.raises(ValueError, match="line break"):
        SinkClient(1).post("http://127.0.0.1:9/", {"ce-id": "a\r\nx-injected: 1"}, b"")
    with pytest.raises(ValueError, match="http or https"):
        SinkClient(1).post("ftp://127.0.0.1/", {}, b"")


def test_against_the_real_processor(tmp_path: Path) -> None:
    """The processor under functions-framework --asgi (uvicorn) answers through this client."""
    with ff_server(REPO / "functions" / "main.py", "processor", tmp_path / "ff.log",
                   BARRAGE_DB=str(tmp_path / "p.db")) as server:
        client = SinkClient(10)
        headers = {"ce-specversion": "1.0", "ce-type": "barrage.sent", "ce-source": "/t",
                   "content-type": "application/json"}
        replies = []
        for n in range(3):
            ident = f"01KDVQ6FM0000000000000000{n}"
            body = (f'{{"id":"{ident}","room":"r","user":"u","text":"hello","sent_at":1767225600000,'
                    f'"colour":null}}').encode()
            replies.append(client.post(server.url, {**headers, "ce-id": ident}, body))
        assert [r.status for r in replies] == [200, 200, 200]
        assert b'"ok": 1' in replies[0].body
        assert client.post(server.url, {}, b"not an event").status == 400
