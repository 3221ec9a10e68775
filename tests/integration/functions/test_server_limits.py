"""The servers' limits with real sockets, against the real servers as the image starts them.

``python -m functions.entrypoint`` serves ``limits_app`` (an app that reports what it saw) both
ways: ``knative`` (functions-framework's ASGI app under ``functions.serve``) and ``fc`` (the custom
container), with httptools' parser and with h11's (what FC's code package has). The deadlines are
set short through the environment (``SERVER_HEADER_TIMEOUT_S``, ``SERVER_BODY_TIMEOUT_S``: 1 s;
``SERVER_BODY_MIN_RATE``: 5 bytes a second), so
the bounds below are generous margins on a shared machine, not performance claims.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.supervisor import free_port, wait_healthy

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
DEADLINE_S = 1.0
MIN_RATE = 5  # bytes a second
SLACK_S = 4.0  # how late past a deadline a close may come on a loaded machine
SERVERS = [("knative", "httptools"), ("fc", "httptools"), ("fc", "h11")]


@dataclass
class Server:
    port: int
    events: Path
    log: Path

    def connect(self, timeout_s: float = 10.0) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=timeout_s)

    def seen(self) -> list[str]:
        return self.events.read_text().split() if self.events.exists() else []


def start_server(tmp: Path, workload_class: str, parser: str, **environ: str) -> tuple[Server, subprocess.Popen[bytes]]:
    port = free_port()
    events, log = tmp / "events.txt", tmp / "server.log"
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR")}
    env = {**keep, "FUNCTIONS_APP": "tests.integration.functions.limits_app", "FUNCTION_TARGET": "probe",
           "WORKLOAD_CLASS": workload_class, "HOST": "127.0.0.1", "PORT": str(port), "WORKERS": "1",
           "SERVER_HTTP": parser, "SERVER_HEADER_TIMEOUT_S": str(DEADLINE_S), "SERVER_BODY_TIMEOUT_S": str(DEADLINE_S),
           "SERVER_BODY_MIN_RATE": str(MIN_RATE), "LIMITS_EVENTS": str(events), "PYTHONDONTWRITEBYTECODE": "1",
           **environ}
    process = subprocess.Popen([sys.executable, "-m", "functions.entrypoint"], cwd=REPO, env=env,
                               stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", 60, lambda: process.poll() is None)
    except Exception:
        stop(process)
        raise RuntimeError(f"the server did not start:\n{log.read_text(errors='replace')}") from None
    return Server(port, events, log), process


def stop(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module", params=SERVERS, ids=[f"{w}-{p}" for w, p in SERVERS])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    workload_class, parser = request.param
    started, process = start_server(tmp_path_factory.mktemp(f"{workload_class}-{parser}"), workload_class, parser)
    yield started
    stop(process)


def read_until_closed(connection: socket.socket, timeout_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes; (the bytes, seconds until the close)."""
    began = time.monotonic()
    connection.settimeout(timeout_s)
    data = b""
    try:
        while chunk := connection.recv(65536):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - began


def status_of(response: bytes) -> int:
    assert response.startswith(b"HTTP/1.1 "), response[:200]
    return int(response.split(b" ", 2)[1])


def error_of(response: bytes) -> dict[str, object]:
    head, _, body = response.partition(b"\r\n\r\n")
    assert b"content-type: application/json" in head.lower(), head
    assert b"connection: close" in head.lower(), head
    error: dict[str, object] = json.loads(body)["error"]
    return error


def request_bytes(method: str, path: str, body: bytes = b"", **headers: str) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1",
             *(f"{k.replace('_', '-')}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def test_half_open_headers_get_408_at_the_deadline(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Partial: ")
        response, waited = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    assert status_of(response) == 408
    assert error_of(response) == {"status": 408, "message": "the request's headers did not arrive within 1 s"}
    assert DEADLINE_S * 0.9 <= waited <= DEADLINE_S + SLACK_S


def test_a_connection_that_sends_nothing_is_closed_at_the_deadline(server: Server) -> None:
    with server.connect() as connection:
        response, waited = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    assert response == b""
    assert DEADLINE_S * 0.9 <= waited <= DEADLINE_S + SLACK_S


def test_the_header_deadline_runs_again_from_the_next_requests_first_byte(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(request_bytes("GET", "/healthz"))
        first, _ = read_until_response(connection)
        assert status_of(first) == 200 and first.endswith(b'{"status": "ok"}')
        time.sleep(0.5)  # idle on keep-alive (5 s) first: the header deadline is not running
        connection.sendall(b"GET /heal")
        response, waited = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    assert status_of(response) == 408
    assert DEADLINE_S * 0.9 <= waited <= DEADLINE_S + SLACK_S


def test_a_stalled_body_gets_408_and_the_app_sees_a_disconnect(server: Server) -> None:
    before = server.seen().count("disconnect")
    with server.connect() as connection:
        connection.sendall(request_bytes("POST", "/read", b'{"half": ', Content_Length="100"))
        response, waited = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    assert status_of(response) == 408
    assert error_of(response) == {"status": 408, "message": "no byte of the request's body arrived for 1 s"}
    assert DEADLINE_S * 0.9 <= waited <= DEADLINE_S + SLACK_S
    deadline = time.monotonic() + 5
    while server.seen().count("disconnect") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.seen().count("disconnect") == before + 1, server.seen()


def test_a_body_that_keeps_coming_is_read_whole(server: Server) -> None:
    parts = [b"x" * 10] * 6  # one every 0.4 s: 2.4 s in all, past the deadline, never silent for 1 s
    with server.connect() as connection:
        connection.sendall(request_bytes("POST", "/read", Content_Length=str(sum(map(len, parts)))))
        for part in parts:
            time.sleep(0.4)
            connection.sendall(part)
        response, _ = read_until_response(connection)
    assert status_of(response) == 200 and response.endswith(b'{"bytes": 60}')


def test_a_body_that_trickles_below_the_rate_gets_408_though_never_silent(server: Server) -> None:
    before = server.seen().count("disconnect")
    with server.connect() as connection:
        connection.sendall(request_bytes("POST", "/read", Content_Length="1000"))
        began = time.monotonic()
        try:  # a byte every 0.4 s (2.5 a second): never silent for the 1 s of the body timeout
            while time.monotonic() - began < DEADLINE_S + SLACK_S + 5:
                time.sleep(0.4)
                connection.sendall(b"z")
        except (BrokenPipeError, ConnectionResetError):
            pass  # closed by the server, as it should be
        response, _ = read_until_closed(connection, 5)
        waited = time.monotonic() - began
    assert status_of(response) == 408
    assert error_of(response) == {"status": 408, "message": f"the request's body arrived at less than {MIN_RATE} "
                                                            "bytes a second"}
    assert DEADLINE_S * 0.9 <= waited <= DEADLINE_S + SLACK_S + 5
    deadline = time.monotonic() + 5
    while server.seen().count("disconnect") == before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.seen().count("disconnect") == before + 1, server.seen()


def test_an_app_slow_to_read_is_not_the_clients_fault(server: Server) -> None:
    # The whole body is sent at once, but the app waits 2.5 s before reading it: uvicorn stops
    # reading past 64 KiB, so for 2.5 s no byte arrives, through no fault of the client.
    body = b"y" * (1024 * 1024)
    with server.connect() as connection:
        connection.sendall(request_bytes("POST", "/read?wait=2.5", body, Content_Length=str(len(body))))
        response, _ = read_until_response(connection)
    assert status_of(response) == 200 and response.endswith(b'{"bytes": 1048576}')


def test_expect_100_continue_waits_for_the_app(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(request_bytes("POST", "/read?wait=2.5", Content_Length="5", Expect="100-continue"))
        interim = connection.recv(65536)
        assert interim.startswith(b"HTTP/1.1 100"), interim
        time.sleep(0.3)
        connection.sendall(b"hello")
        response, _ = read_until_response(connection)
    assert status_of(response) == 200 and response.endswith(b'{"bytes": 5}')


def read_until_response(connection: socket.socket, timeout_s: float = 20.0) -> tuple[bytes, float]:
    """One response with a Content-Length, read whole."""
    began = time.monotonic()
    connection.settimeout(timeout_s)
    data = b""
    while b"\r\n\r\n" not in data or len(data.partition(b"\r\n\r\n")[2]) < _length(data):
        chunk = connection.recv(65536)
        assert chunk, f"closed before the response was whole: {data[:300]!r}"
        data += chunk
    return data, time.monotonic() - began


def _length(data: bytes) -> int:
    for line in data.partition(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


def test_pipelined_requests_are_answered_and_a_partial_one_after_them_gets_408(server: Server) -> None:
    body = b"z" * 100
    with server.connect() as connection:
        connection.sendall(request_bytes("GET", "/healthz") + request_bytes("POST", "/read", body,
                                                                             Content_Length=str(len(body)))
                           + b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        response, waited = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    answers = response.split(b"HTTP/1.1 ")[1:]
    assert [int(a.split(b" ", 1)[0]) for a in answers] == [200, 200, 408], response
    assert b'{"bytes": 100}' in answers[1]
    assert waited <= DEADLINE_S + SLACK_S


def test_oversized_headers_get_431(server: Server) -> None:
    with server.connect() as connection:
        connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        try:
            for _ in range(20):  # 20 x 10 KB: past the default cap of 64 KiB
                connection.sendall(b"X-Filler: " + b"f" * 10_000 + b"\r\n")
        except OSError:
            pass  # the server answered and closed while we were still sending
        response, _ = read_until_closed(connection, 10)
    assert status_of(response) == 431
    assert error_of(response)["status"] == 431


@pytest.mark.parametrize("raw", [
    b"NOT HTTP AT ALL\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: banana\r\n\r\n",
    b"POST /read HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header Name: x\r\n\r\n",
    b"GET /\x00 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
], ids=["garbage", "bad-length", "bad-chunk", "bad-header-name", "nul-in-target"])
def test_malformed_requests_get_a_4xx(server: Server, raw: bytes) -> None:
    with server.connect() as connection:
        connection.sendall(raw)
        response, _ = read_until_closed(connection, DEADLINE_S + SLACK_S + 5)
    assert 400 <= status_of(response) < 500, response[:300]
    error = error_of(response)  # the layer's JSON error, as every other refusal
    assert error["status"] == status_of(response) and isinstance(error["message"], str) and error["message"]


def test_healthz_answers_while_300_half_open_connections_are_held(server: Server) -> None:
    held = []
    try:
        for n in range(300):
            connection = server.connect()
            connection.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + str(n).encode())
            held.append(connection)
        for _ in range(5):
            with server.connect(5) as probe:
                probe.sendall(request_bytes("GET", "/healthz", Connection="close"))
                response, _ = read_until_closed(probe, 5)
            assert status_of(response) == 200
        # and the server lets them go at the deadline: every one is answered 408 and closed
        statuses = {status_of(read_until_closed(c, DEADLINE_S + SLACK_S + 10)[0]) for c in held}
        assert statuses == {408}
    finally:
        for connection in held:
            connection.close()


@pytest.mark.parametrize(("workload_class", "parser"), SERVERS, ids=[f"{w}-{p}" for w, p in SERVERS])
def test_connections_beyond_the_cap_get_503(tmp_path: Path, workload_class: str, parser: str) -> None:
    capped, process = start_server(tmp_path, workload_class, parser, SERVER_MAX_CONNECTIONS="8",
                                   SERVER_HEADER_TIMEOUT_S="30")
    idle: list[socket.socket] = []
    try:
        idle.extend(capped.connect() for _ in range(8))
        time.sleep(0.3)  # the server has taken them (accept and connection_made)
        with capped.connect() as connection:
            connection.sendall(request_bytes("GET", "/healthz"))
            response, _ = read_until_closed(connection, 10)
        assert status_of(response) == 503, response[:300]
        for connection in idle:
            connection.close()
        idle.clear()
        deadline = time.monotonic() + 10
        while True:  # the server notices the closes: below the cap again
            with capped.connect() as connection:
                connection.sendall(request_bytes("GET", "/healthz", Connection="close"))
                response, _ = read_until_closed(connection, 10)
            if status_of(response) == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert status_of(response) == 200
    finally:
        for connection in idle:
            connection.close()
        stop(process)
