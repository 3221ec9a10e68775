"""The HomePage API through its one ASGI app: every endpoint and every rejection path.

Plain requests go through Starlette's TestClient; event streams, requests that overlap and
raw chunked bodies go through a real uvicorn server on 127.0.0.1 (``tests.asgi_server``).
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx2 as httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route
from starlette.testclient import TestClient

from functions.adapters.memory import InProcessPublisher, MemoryResultStore
from functions.config import ConfigError, Settings
from functions.homepage import STATIC_DIR, HomePageOptions, create_app
from functions.loadrun import LoadLimits
from functions.wiring import Services, process_config
from handlers.ports import Page, SystemClock
from tests.asgi_server import serving
from tests.waiting import wait_for

FAST_STREAMS = HomePageOptions(max_streams=2, stream_lifetime_s=0.4, stream_poll_s=0.02, heartbeat_s=0.1)
MAX_BODY = 4096


def make_services(tmp_path: Path, store: Any = None, max_body: int = MAX_BODY) -> Services:
    settings = Settings.from_environ({"BARRAGE_BUS": "memory", "BARRAGE_DB": str(tmp_path / "unused.db"),
                                      "BARRAGE_MAX_BODY_BYTES": str(max_body)})
    clock = SystemClock()
    config = process_config(settings)
    store = store if store is not None else MemoryResultStore()
    return Services(settings, store, InProcessPublisher(store, clock, config), clock, config)


Build = Callable[..., tuple[Starlette, TestClient]]


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Build]:
    """``build(options, store=, remote=)``: a fresh app and a TestClient for it (client address ``remote``)."""
    made: list[Services] = []
    with ExitStack() as stack:

        def _build(options: HomePageOptions = FAST_STREAMS, store: Any = None, max_body: int = MAX_BODY,
                   remote: str = "10.0.0.1") -> tuple[Starlette, TestClient]:
            services = make_services(tmp_path, store, max_body)
            made.append(services)
            app = create_app(services, options)
            return app, other_client(app, remote, stack)

        yield _build
    for services in made:
        services.close()  # stops load runs still going


@pytest.fixture
def client(build: Build) -> TestClient:
    return build()[1]


def other_client(app: Starlette, remote: str, stack: ExitStack) -> TestClient:
    client: TestClient = stack.enter_context(TestClient(app, client=(remote, 50000)))
    return client


def post_json(client: Any, path: str, body: object) -> Any:
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def mimetype(response: Any) -> str:
    return str(response.headers.get("content-type", "")).split(";")[0].strip()


def assert_error(response: Any, status: int, contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert mimetype(response) == "application/json"
    error = response.json()["error"]
    assert error["status"] == status
    assert contains in error["message"]
    return dict(error)


# -- the page and its headers ------------------------------------------------------------


def test_page_is_served_with_strict_security_headers(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and mimetype(response) == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    html = response.text
    # Nothing inline for the CSP to block: every script has a src, no style elements or attributes.
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+\s*=", html) is None
    assert '<meta name="barrage-stream" content="on">' in html


def test_page_says_when_there_are_no_streams(build: Build) -> None:
    _, client = build(HomePageOptions(max_streams=0))
    html = client.get("/").text
    assert '<meta name="barrage-stream" content="off">' in html
    assert 'content="on"' not in html


def test_page_revalidates_with_its_etag(client: TestClient) -> None:
    first = client.get("/static/app.js")
    assert first.headers["Cache-Control"] == "no-cache"
    again = client.get("/static/app.js", headers={"If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.parametrize(("path", "media"), [("/static/app.js", "text/javascript"),
                                              ("/static/app.css", "text/css"),
                                              ("/static/favicon.svg", "image/svg+xml")])
def test_static_files(client: TestClient, path: str, media: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert mimetype(response) == media
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.content == (STATIC_DIR / path.rsplit("/", 1)[1]).read_bytes()


def test_page_scripts_never_write_html() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/../homepage/app.py", "/static/%2e%2e/config.py",
                                  "/static/%00", "/static/", "/static"])
def test_static_misses_are_json_404(build: Build, path: str) -> None:
    app, _ = build()
    # Raw request lines: an HTTP client would tidy the dots away before the server saw them.
    with serving(app) as url, socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), timeout=5) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        raw = b""
        while chunk := sock.recv(65536):
            raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404"), head
    assert json.loads(body)["error"]["status"] == 404


def test_cors_is_off_by_default(client: TestClient) -> None:
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/api/barrages", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_only_configured_origins(build: Build) -> None:
    _, client = build(HomePageOptions(cors_origins=("https://ok.example",)))
    allowed = client.get("/healthz", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in allowed.headers["Vary"]
    other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers
    preflight = client.options("/api/barrages", headers={
        "Origin": "https://ok.example", "Access-Control-Request-Method": "POST"})
    assert preflight.status_code == 204
    assert preflight.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "POST" in preflight.headers["Access-Control-Allow-Methods"]
    assert "Last-Event-ID" in preflight.headers["Access-Control-Allow-Headers"]


def test_options_lists_the_methods_and_unknown_paths_are_404(client: TestClient) -> None:
    response = client.options("/api/barrages")
    assert response.status_code == 204
    assert {m.strip() for m in response.headers["Allow"].split(",")} == {"GET", "HEAD", "POST", "OPTIONS"}
    assert_error(client.options("/nowhere"), 404)


def test_options_from_settings() -> None:
    def options(environ: dict[str, str]) -> HomePageOptions:
        return HomePageOptions.from_settings(Settings.from_environ(environ))

    both = options({"BARRAGE_CORS_ORIGINS": "https://a, https://b"})
    assert both.max_streams == 10_000  # sized for thousands of viewers, whatever THREADS says
    assert both.cors_origins == ("https://a", "https://b")
    assert options({"THREADS": "1"}).max_streams == 10_000
    assert options({"BARRAGE_MAX_STREAMS": "0"}).max_streams == 0
    assert options({"BARRAGE_MAX_STREAMS": "25000"}).max_streams == 25_000
    with pytest.raises(ConfigError, match="BARRAGE_MAX_STREAMS"):
        options({"BARRAGE_MAX_STREAMS": "many"})
    with pytest.raises(ConfigError, match="BARRAGE_MAX_STREAMS"):
        options({"BARRAGE_MAX_STREAMS": "-1"})
    assert both.stream_poll_s == 0.05  # a stored barrage is pushed within 50 ms
    assert options({"BARRAGE_STREAM_TICK_MS": "250"}).stream_poll_s == 0.25
    for bad in ("0", "fast", "20000"):
        with pytest.raises(ConfigError, match="BARRAGE_STREAM_TICK_MS"):
            options({"BARRAGE_STREAM_TICK_MS": bad})


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "bus": "memory"}


# -- OpenAPI -------------------------------------------------------------------------------


def test_openapi_describes_every_route(build: Build) -> None:
    app, client = build()
    document = client.get("/openapi.json").json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    routes = set()
    for route in app.routes:
        assert isinstance(route, Route)
        if route.path.startswith("/static/"):
            continue
        path = route.path.replace("{run_id}", "{id}")
        routes |= {(path, method.lower()) for method in route.methods or () if method not in ("HEAD", "OPTIONS")}
    assert routes == documented
    for path, item in document["paths"].items():
        for method, operation in item.items():
            statuses = set(operation["responses"])
            if path.startswith("/api/"):
                assert any(s.startswith("4") for s in statuses), (path, method)
            for status, response in operation["responses"].items():
                if status.startswith(("4", "5")):
                    assert response["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/Error"}


def test_openapi_states_the_configured_limits(build: Build) -> None:
    _, client = build(HomePageOptions(load=LoadLimits(max_concurrency=8, max_duration_s=10), max_streams=7))
    document = client.get("/openapi.json").json()
    schema = document["components"]["schemas"]["LoadRequest"]["properties"]
    assert schema["concurrency"]["maximum"] == 8
    assert schema["duration"]["maximum"] == 10
    assert "At most 7 streams" in document["paths"]["/api/stream"]["get"]["description"]
    assert "Body larger than 4096 bytes" in json.dumps(document["paths"]["/api/barrages"]["post"]["responses"])


# -- request limits ------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/barrages", "/api/load"])
def test_declared_oversize_body_is_413_without_reading_it(build: Build, path: str) -> None:
    app, _ = build()
    with serving(app) as url, socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), timeout=5) as sock:
        # Claims 10 MB and sends none of it: the answer comes from the header alone.
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: 10000000\r\n\r\n".encode())
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert json.loads(body)["error"]["message"] == f"body is larger than {MAX_BODY} bytes"


def test_chunked_oversize_body_is_413_while_it_streams(build: Build) -> None:
    app, _ = build()
    with serving(app) as url, socket.create_connection(("127.0.0.1", urlsplit(url).port or 0), timeout=5) as sock:
        sock.sendall(b"POST /api/barrages HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     b"Transfer-Encoding: chunked\r\n\r\n")
        chunk = b"[" + b" " * 1023
        # Twice the limit and never the closing chunk: the server stops reading and answers.
        for _ in range(2 * MAX_BODY // len(chunk)):
            sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        head, body = read_response(sock)
    assert head.startswith(b"HTTP/1.1 413"), head
    assert "larger than" in json.loads(body)["error"]["message"]


def read_response(sock: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP/1.1 response with a Content-Length, read from a raw socket."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before the answer: {raw!r}"
        raw += chunk
    head, _, body = raw.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?im)^content-length:\s*(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk
        body += chunk
    return head, body[:length]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"[" * 50_000, "nested deeper than 32 levels"),
        (b"{\"a\":" * 40 + b"1" + b"}" * 40, "nested deeper than 32 levels"),
        (b"[" * 33 + b"]" * 33, "nested deeper than 32 levels"),
        (b"\x00\x01garbage", "not valid JSON"),
        (b"{\"room\": \"r\", ", "not valid JSON"),
        (b"\"\\", "not valid JSON"),
        (b"\xff\xfe", "not UTF-8"),
    ],
)
def test_unparseable_or_deep_json_is_400(build: Build, body: bytes, message: str) -> None:
    _, client = build(max_body=1_048_576)
    for path in ("/api/barrages", "/api/load"):
        assert_error(client.post(path, content=body, headers={"Content-Type": "application/json"}), 400, message)


def test_nesting_within_the_limit_is_parsed(client: TestClient) -> None:
    # 32 levels of list: valid JSON, not a barrage; the answer is about the body's shape, not its depth.
    body = b"[" * 32 + b"]" * 32
    error = assert_error(client.post("/api/barrages", content=body, headers={"Content-Type": "application/json"}),
                         400)
    assert "nested" not in error["message"]
    # Brackets inside strings are text, not nesting.
    text = {"room": "r", "user": "u", "text": "[" * 100}
    assert post_json(client, "/api/barrages", text).status_code == 202


# -- Server-Sent Events --------------------------------------------------------------------


def parse_events(raw: str) -> list[dict[str, Any]]:
    events = []
    for block in raw.split("\n\n"):
        if not block.strip():
            continue
        event: dict[str, Any] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(":")
            event.setdefault("comment" if name == "" else name, value.strip())
        if "data" in event:
            event["data"] = json.loads(event["data"])
        events.append(event)
    return events


def send_text(client: Any, room: str, text: str) -> None:
    assert post_json(client, "/api/barrages", {"room": room, "user": "u", "text": text}).status_code == 202


def test_stream_resumes_after_a_cursor_and_ends_by_itself(client: TestClient) -> None:
    send_text(client, "s1", "before")
    cursor = client.get("/api/barrages?room=s1").json()["cursor"]
    send_text(client, "s1", "after")
    started = time.monotonic()
    response = client.get(f"/api/stream?room=s1&since={cursor}")  # returns when the lifetime ends
    assert response.status_code == 200 and mimetype(response) == "text/event-stream"
    assert response.headers["Cache-Control"].startswith("no-cache")
    assert response.headers["X-Accel-Buffering"] == "no"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    events = parse_events(response.text)
    assert time.monotonic() - started < 5
    assert events[0] == {"retry": "1000"}
    first = events[1]
    assert [item["text"] for item in first["data"]["items"]] == ["after"]
    assert first["id"] == first["data"]["cursor"]
    assert {"lane", "colour", "sent_at"} <= set(first["data"]["items"][0])
    assert events[-1] == {"comment": "lifetime reached; reconnect"}
    assert any(e.get("comment") == "ping" for e in events)  # heartbeats while idle


def test_stream_without_cursor_starts_now_and_pushes_new_ones(build: Build) -> None:
    app, client = build()
    send_text(client, "s2", "old")
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        timer = threading.Timer(0.15, send_text, (live, "s2", "new"))
        timer.start()
        events = parse_events(live.get("/api/stream?room=s2").text)
        timer.join()
    pages = [e["data"] for e in events if "data" in e]
    assert pages[0]["items"] == []
    assert [i["text"] for p in pages for i in p["items"]] == ["new"]
    assert all(e["id"] == e["data"]["cursor"] for e in events if "data" in e)


def test_last_event_id_wins_over_since(client: TestClient) -> None:
    send_text(client, "s3", "one")
    middle = client.get("/api/barrages?room=s3").json()["cursor"]
    send_text(client, "s3", "two")
    response = client.get("/api/stream?room=s3&since=garbage", headers={"Last-Event-ID": middle})
    pages = [e["data"] for e in parse_events(response.text) if "data" in e]
    assert [i["text"] for p in pages for i in p["items"]] == ["two"]


def test_a_viewer_joining_a_busy_room_misses_nothing_and_gets_nothing_twice(build: Build) -> None:
    """Catch-up from the viewer's cursor and the room's reads overlap; each barrage arrives once."""
    app, client = build(HomePageOptions(stream_lifetime_s=1.5, stream_poll_s=0.01, heartbeat_s=5))
    start = client.get("/api/barrages?room=busy").json()["cursor"]
    stop = threading.Event()
    sent: list[str] = []

    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        def chatter() -> None:
            index = 0
            while not stop.is_set() and index < 300:
                send_text(live, "busy", f"m{index}")
                sent.append(f"m{index}")
                index += 1

        early = threading.Thread(target=lambda: live.get("/api/stream?room=busy").text)  # keeps the room reading
        early.start()
        thread = threading.Thread(target=chatter)
        thread.start()
        time.sleep(0.2)
        events = parse_events(live.get(f"/api/stream?room=busy&since={start}").text)
        stop.set()
        thread.join()
        early.join()
    received = [i["text"] for e in events if "data" in e for i in e["data"]["items"]]
    assert len(received) == len(set(received)), "a barrage came twice"
    assert received == sent[: len(received)], "out of order or a gap"
    assert len(received) > 10


@pytest.mark.parametrize(
    ("query", "headers", "parameter"),
    [("", {}, "room"), ("room=a%20b", {}, "room"), ("room=r&since=garbage", {}, "since"),
     ("room=r", {"Last-Event-ID": "garbage"}, "Last-Event-ID")],
)
def test_stream_rejects_bad_input(client: TestClient, query: str, headers: dict[str, str], parameter: str) -> None:
    error = assert_error(client.get(f"/api/stream?{query}", headers=headers), 400)
    assert error["parameter"] == parameter
    assert error["message"].startswith(f"{parameter}:")


def test_streams_are_capped_and_slots_come_back(build: Build) -> None:
    app, _ = build(HomePageOptions(max_streams=1, stream_lifetime_s=30, stream_poll_s=0.02))
    hub = app.state.hub
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        with live.stream("GET", "/api/stream?room=c") as first:
            assert first.status_code == 200
            chunks = first.iter_bytes()  # kept: a dropped iterator would close the response
            assert next(chunks).startswith(b"retry: 1000\n\n")
            assert hub.open_streams == 1
            refused = live.get("/api/stream?room=c")
            assert_error(refused, 503, "poll GET /api/barrages")
            assert refused.headers["Retry-After"] == "10"
        # The client went away mid-stream: the slot comes back.
        wait_for(lambda: hub.open_streams == 0, timeout_s=5, what="the stream slot to come back")
        with live.stream("GET", "/api/stream?room=c") as second:
            assert second.status_code == 200


def test_a_viewer_that_stops_reading_is_dropped_and_the_others_keep_up(build: Build) -> None:
    app, _ = build(HomePageOptions(viewer_queue=2, stream_poll_s=0.01, stream_lifetime_s=60, stream_send_timeout_s=1.0),
                   max_body=1_048_576)
    hub = app.state.hub
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        port = urlsplit(url).port or 0
        stuck = socket.socket()
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a tiny window, never read
        stuck.connect(("127.0.0.1", port))
        stuck.sendall(b"GET /api/stream?room=flood HTTP/1.1\r\nHost: x\r\n\r\n")
        wait_for(lambda: hub.viewers("flood") == 1, timeout_s=5, what="the stuck viewer to join")
        texts: list[str] = []
        with live.stream("GET", "/api/stream?room=flood") as keeping_up:
            lines = keeping_up.iter_lines()
            assert next(lines) == "retry: 1000"
            wait_for(lambda: hub.viewers("flood") == 2, timeout_s=5, what="the second viewer to join")
            batch = [{"room": "flood", "user": "u", "text": "x" * 200} for _ in range(500)]
            sent = 0
            while hub.viewers("flood") == 2 and sent < 200 * 500:
                assert post_json(live, "/api/barrages", batch).status_code == 202
                sent += 500
                for line in lines:  # the viewer that keeps up reads what is there
                    if line.startswith("data:"):
                        texts.extend(i["text"] for i in json.loads(line[5:])["items"])
                    if len(texts) >= sent:
                        break
            assert hub.viewers("flood") == 1, f"the stuck viewer was not dropped after {sent} barrages"
            assert len(texts) == sent  # the one that keeps up got everything
            # Its queue is gone at once; its blocked write gives up after the send timeout, and the
            # server closes the connection although the client never read nor hung up.
            wait_for(lambda: hub.open_streams == 1, timeout_s=10, what="the stuck viewer's stream to end")
        stuck.settimeout(10)
        while stuck.recv(1 << 20):  # what was in flight, then the end of the connection
            pass
        stuck.close()
        wait_for(lambda: hub.open_streams == 0, timeout_s=10, what="every stream slot to come back")


def test_no_streams_when_disabled(build: Build) -> None:
    _, client = build(HomePageOptions(max_streams=0))
    error = assert_error(client.get("/api/stream?room=c"), 503, "does not stream")
    assert error["open_streams"] == 0
    assert client.get("/api/barrages?room=c").status_code == 200  # polling still works


class FlakyStore(MemoryResultStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        if self.fail:
            raise ConnectionError("store unreachable")
        return super().since(room, cursor_token, limit)


def test_store_failure_ends_the_stream_with_a_problem_event(build: Build) -> None:
    store = FlakyStore()
    app, _ = build(HomePageOptions(stream_lifetime_s=30, stream_poll_s=0.02), store=store)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        started = time.monotonic()
        with live.stream("GET", "/api/stream?room=f") as response:
            chunks = response.iter_bytes()
            received = b""
            while b"data:" not in received:  # retry and the first page
                received += next(chunks)
            store.fail = True
            received += b"".join(chunks)  # ends promptly instead of running 30 s
        assert time.monotonic() - started < 10
        events = parse_events(received.decode())
        assert events[-1] == {"event": "problem", "data": {"message": "store read failed; reconnecting"}}
        wait_for(lambda: app.state.hub.open_streams == 0, timeout_s=5, what="the stream slot to come back")
        store.fail = False
        with live.stream("GET", "/api/stream?room=f") as again:  # the room starts afresh
            assert again.status_code == 200


class SlowStore(MemoryResultStore):
    """A store whose reads take ``delay_s`` (a blocking SDK call, a slow network)."""

    def __init__(self) -> None:
        super().__init__()
        self.delay_s = 0.0
        self.reading = threading.Event()

    def latest(self, room: str, limit: int) -> Page:
        if self.delay_s:
            self.reading.set()
            time.sleep(self.delay_s)
        return super().latest(room, limit)


def test_a_slow_store_call_does_not_block_the_loop(build: Build) -> None:
    store = SlowStore()
    app, _ = build(store=store)
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live:
        store.delay_s = 2.0
        slow = threading.Thread(target=lambda: live.get("/api/barrages?room=slow"))
        slow.start()
        assert store.reading.wait(5)
        started = time.monotonic()
        assert live.get("/healthz").status_code == 200
        assert live.get("/static/app.js").status_code == 200
        answered_in = time.monotonic() - started
        slow.join()
    assert answered_in < 1.0, f"/healthz took {answered_in:.2f} s while a store read was in progress"


# -- load runs -----------------------------------------------------------------------------

LOAD = {"message": "load test", "concurrency": 2, "duration": 0.3, "room": "load"}


def follow(client: TestClient, run_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/load/{run_id}").json()
        if body["state"] == "finished" or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.05)


def test_load_run_publishes_and_reports_final_stats(client: TestClient) -> None:
    response = post_json(client, "/api/load", LOAD)
    assert response.status_code == 202
    started = response.json()
    assert response.headers["Location"] == f"/api/load/{started['id']}"
    assert re.fullmatch(r"[0-9a-f]{24}", started["id"])
    assert {k: started[k] for k in ("room", "user", "message", "concurrency", "duration")} == {
        "room": "load", "user": "load", "message": "load test", "concurrency": 2, "duration": 0.3}
    final = follow(client, started["id"])
    assert final["state"] == "finished" and final["progress"] == 1
    assert final["sent"] > 0 and final["accepted"] == final["sent"]
    assert final["rejected"] == final["errors"] == 0
    assert 0.3 <= final["elapsed"] < 5
    assert final["throughput"] > 0
    latency = final["latency_ms"]
    assert 0 <= latency["p50"] <= latency["p95"] <= latency["p99"]
    # Everything accepted went through the publisher into the store.
    page = client.get("/api/barrages?room=load&limit=5").json()
    assert [i["text"] for i in page["items"]] == ["load test"] * 5


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        ([1], "body", "JSON object"),
        (LOAD | {"speed": 1}, "speed", "unknown field"),
        ({k: v for k, v in LOAD.items() if k != "message"}, "message", "is required"),
        (LOAD | {"message": " "}, "message", "must not be empty"),
        (LOAD | {"room": "no spaces"}, "room", "must match"),
        (LOAD | {"user": 7}, "user", "must be a string"),
        (LOAD | {"concurrency": 65}, "concurrency", "between 1 and 64"),
        (LOAD | {"concurrency": "2"}, "concurrency", "integer"),
        (LOAD | {"duration": 61}, "duration", "at most 60 seconds"),
        (LOAD | {"duration": 0}, "duration", "more than 0"),
        (LOAD | {"duration": None}, "duration", "number of seconds"),
    ],
)
def test_load_rejects_bad_fields(client: TestClient, body: object, field: str, message: str) -> None:
    error = assert_error(post_json(client, "/api/load", body), 400, message)
    assert error["field"] == field


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        ("{bad", "application/json", 400, "not valid JSON"),
        (b"\xff", "application/json", 400, "not UTF-8"),
        (json.dumps(LOAD), "text/plain", 415, "Content-Type"),
        (json.dumps(LOAD | {"message": "x" * 5000}), "application/json", 413, "larger"),
    ],
)
def test_load_rejects_bad_bodies(client: TestClient, content: str | bytes, content_type: str, status: int,
                                 message: str) -> None:
    assert_error(client.post("/api/load", content=content, headers={"Content-Type": content_type}), status, message)


def test_one_run_per_client(build: Build) -> None:
    app, client = build()
    first = post_json(client, "/api/load", LOAD | {"duration": 30})
    assert first.status_code == 202
    error = assert_error(post_json(client, "/api/load", LOAD), 409, "still running")
    assert error["run"] == first.json()["id"]
    with ExitStack() as stack:
        assert post_json(other_client(app, "10.0.0.2", stack), "/api/load", LOAD).status_code == 202


def test_starts_are_rate_limited(build: Build) -> None:
    _, client = build(HomePageOptions(load=LoadLimits(starts_per_window=1, window_s=60)))
    first = post_json(client, "/api/load", LOAD | {"duration": 0.05})
    assert first.status_code == 202
    follow(client, first.json()["id"])
    refused = post_json(client, "/api/load", LOAD)
    assert_error(refused, 429, "at most 1 load runs per 60 s")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_active_runs_are_capped(build: Build) -> None:
    app, client = build(HomePageOptions(load=LoadLimits(max_active_runs=1)))
    assert post_json(client, "/api/load", LOAD | {"duration": 30}).status_code == 202
    with ExitStack() as stack:
        refused = post_json(other_client(app, "10.0.0.9", stack), "/api/load", LOAD)
    assert_error(refused, 503, "load runs are active")
    assert refused.headers["Retry-After"] == "5"


@pytest.mark.parametrize("run_id", ["0" * 24, "nope", "z" * 300])
def test_unknown_run_is_404(client: TestClient, run_id: str) -> None:
    assert_error(client.get(f"/api/load/{run_id}"), 404, "no load run")


def test_wrong_methods_are_json_405(client: TestClient) -> None:
    assert_error(client.get("/api/load"), 405)
    response = client.post("/api/stream")
    assert_error(response, 405)
    assert "GET" in response.headers["Allow"]
    assert_error(client.delete("/api/load/" + "0" * 24), 405)


def test_an_unexpected_error_is_a_json_500_and_the_app_keeps_serving(build: Build) -> None:
    class BrokenStore(MemoryResultStore):
        def latest(self, room: str, limit: int) -> Page:
            raise RuntimeError("a bug")

    _, client = build(store=BrokenStore())
    assert_error(client.get("/api/barrages?room=r"), 500, "internal error")
    assert client.get("/healthz").status_code == 200
