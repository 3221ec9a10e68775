"""The HomePage API through the one Flask app: every endpoint and every rejection path."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from functions.adapters.memory import InProcessPublisher, MemoryResultStore
from functions.config import ConfigError, Settings
from functions.homepage import STATIC_DIR, HomePageOptions, create_app
from functions.loadrun import LoadLimits
from functions.wiring import Services, process_config
from handlers.ports import Page, SystemClock

FAST_STREAMS = HomePageOptions(max_streams=2, stream_lifetime_s=0.4, stream_poll_s=0.02, heartbeat_s=0.1)


def make_services(tmp_path: Path, store: Any = None) -> Services:
    settings = Settings.from_environ({"BARRAGE_BUS": "memory", "BARRAGE_DB": str(tmp_path / "unused.db"),
                                      "BARRAGE_MAX_BODY_BYTES": "4096"})
    clock = SystemClock()
    config = process_config(settings)
    store = store if store is not None else MemoryResultStore()
    return Services(settings, store, InProcessPublisher(store, clock, config), clock, config)


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., tuple[Flask, FlaskClient]]]:
    made: list[Services] = []

    def _build(options: HomePageOptions = FAST_STREAMS, store: Any = None) -> tuple[Flask, FlaskClient]:
        services = make_services(tmp_path, store)
        made.append(services)
        app = create_app(services, options)
        return app, app.test_client()

    yield _build
    for services in made:
        services.close()  # stops load runs still going


@pytest.fixture
def client(build: Callable[..., tuple[Flask, FlaskClient]]) -> FlaskClient:
    return build()[1]


def post_json(client: FlaskClient, path: str, body: object, remote: str = "10.0.0.1") -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json",
                       environ_base={"REMOTE_ADDR": remote})


def assert_error(response: Any, status: int, contains: str = "") -> dict[str, Any]:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["status"] == status
    assert contains in error["message"]
    return dict(error)


# -- the page and its headers ------------------------------------------------------------


def test_page_is_served_with_strict_security_headers(client: FlaskClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and response.mimetype == "text/html"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "frame-ancestors 'none'" in csp and "style-src 'self'" in csp
    assert "unsafe-inline" not in csp
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    html = response.get_data(as_text=True)
    # Nothing inline for the CSP to block: every script has a src, no style elements or attributes.
    assert all("src=" in tag for tag in re.findall(r"<script\b[^>]*>", html))
    assert "<style" not in html and " style=" not in html
    assert re.search(r"\son[a-z]+\s*=", html) is None


@pytest.mark.parametrize(("path", "mimetype"), [("/static/app.js", "text/javascript"),
                                                 ("/static/app.css", "text/css"),
                                                 ("/static/favicon.svg", "image/svg+xml")])
def test_static_files(client: FlaskClient, path: str, mimetype: str) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.mimetype == mimetype
    assert response.headers["X-Content-Type-Options"] == "nosniff"


def test_page_scripts_never_write_html() -> None:
    script = (STATIC_DIR / "app.js").read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in script


@pytest.mark.parametrize("path", ["/static/nope.js", "/static/../homepage.py", "/static/%2e%2e/homepage.py"])
def test_static_misses_are_json_404(client: FlaskClient, path: str) -> None:
    assert_error(client.get(path), 404)


def test_cors_is_off_by_default(client: FlaskClient) -> None:
    response = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in response.headers
    preflight = client.options("/api/barrages", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "Access-Control-Allow-Origin" not in preflight.headers


def test_cors_allows_only_configured_origins(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    _, client = build(HomePageOptions(cors_origins=("https://ok.example",)))
    allowed = client.get("/healthz", headers={"Origin": "https://ok.example"})
    assert allowed.headers["Access-Control-Allow-Origin"] == "https://ok.example"
    assert "Origin" in allowed.headers["Vary"]
    other = client.get("/healthz", headers={"Origin": "https://evil.example"})
    assert "Access-Control-Allow-Origin" not in other.headers


def test_options_from_settings() -> None:
    def options(environ: dict[str, str]) -> HomePageOptions:
        return HomePageOptions.from_settings(Settings.from_environ(environ))

    both = options({"THREADS": "8", "BARRAGE_CORS_ORIGINS": "https://a, https://b"})
    assert both.max_streams == 4
    assert both.cors_origins == ("https://a", "https://b")
    assert options({"THREADS": "1"}).max_streams == 1
    assert options({"THREADS": "8", "BARRAGE_MAX_STREAMS": "0"}).max_streams == 0
    with pytest.raises(ConfigError, match="THREADS"):
        options({"THREADS": "many"})


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok", "bus": "memory"}


# -- OpenAPI -------------------------------------------------------------------------------


def test_openapi_describes_every_route(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    app, client = build()
    document = client.get("/openapi.json").get_json()
    assert document["openapi"].startswith("3.")
    documented = {(path, method) for path, item in document["paths"].items() for method in item}
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/static/"):
            continue
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", lambda m: "{id}" if m.group(1) == "run_id" else f"{{{m.group(1)}}}",
                      rule.rule)
        routes |= {(path, method.lower()) for method in rule.methods or () if method not in ("HEAD", "OPTIONS")}
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


def test_openapi_states_the_configured_limits(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    _, client = build(HomePageOptions(load=LoadLimits(max_concurrency=8, max_duration_s=10)))
    schema = client.get("/openapi.json").get_json()["components"]["schemas"]["LoadRequest"]["properties"]
    assert schema["concurrency"]["maximum"] == 8
    assert schema["duration"]["maximum"] == 10


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


def send_text(client: FlaskClient, room: str, text: str) -> None:
    assert post_json(client, "/api/barrages", {"room": room, "user": "u", "text": text}).status_code == 202


def test_stream_resumes_after_a_cursor_and_ends_by_itself(client: FlaskClient) -> None:
    send_text(client, "s1", "before")
    cursor = client.get("/api/barrages?room=s1").get_json()["cursor"]
    send_text(client, "s1", "after")
    started = time.monotonic()
    response = client.get(f"/api/stream?room=s1&since={cursor}")
    assert response.status_code == 200 and response.mimetype == "text/event-stream"
    assert response.headers["Cache-Control"].startswith("no-cache")
    events = parse_events(response.get_data(as_text=True))  # returns when the lifetime ends
    assert time.monotonic() - started < 5
    assert events[0] == {"retry": "1000"}
    first = events[1]
    assert [item["text"] for item in first["data"]["items"]] == ["after"]
    assert first["id"] == first["data"]["cursor"]
    assert {"lane", "colour", "sent_at"} <= set(first["data"]["items"][0])
    assert events[-1] == {"comment": "lifetime reached; reconnect"}
    assert any(e.get("comment") == "ping" for e in events)  # heartbeats while idle


def test_stream_without_cursor_starts_now_and_pushes_new_ones(client: FlaskClient) -> None:
    send_text(client, "s2", "old")
    timer = threading.Timer(0.1, send_text, (client, "s2", "new"))
    timer.start()
    events = parse_events(client.get("/api/stream?room=s2").get_data(as_text=True))
    timer.join()
    pages = [e["data"] for e in events if "data" in e]
    assert pages[0]["items"] == []
    assert [i["text"] for p in pages for i in p["items"]] == ["new"]


def test_last_event_id_wins_over_since(client: FlaskClient) -> None:
    send_text(client, "s3", "one")
    middle = client.get("/api/barrages?room=s3").get_json()["cursor"]
    send_text(client, "s3", "two")
    response = client.get("/api/stream?room=s3&since=garbage", headers={"Last-Event-ID": middle})
    pages = [e["data"] for e in parse_events(response.get_data(as_text=True)) if "data" in e]
    assert [i["text"] for p in pages for i in p["items"]] == ["two"]


@pytest.mark.parametrize(
    ("query", "headers", "parameter"),
    [("", {}, "room"), ("room=a%20b", {}, "room"), ("room=r&since=garbage", {}, "since"),
     ("room=r", {"Last-Event-ID": "garbage"}, "Last-Event-ID")],
)
def test_stream_rejects_bad_input(client: FlaskClient, query: str, headers: dict[str, str], parameter: str) -> None:
    error = assert_error(client.get(f"/api/stream?{query}", headers=headers), 400)
    assert error["parameter"] == parameter
    assert error["message"].startswith(f"{parameter}:")


def test_streams_are_capped_and_slots_come_back(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    app, client = build(HomePageOptions(max_streams=1, stream_lifetime_s=30, stream_poll_s=0.02))
    slots = app.extensions["barrage.streams"]
    first = client.get("/api/stream?room=c", buffered=False)
    assert first.status_code == 200 and slots.open == 1
    refused = client.get("/api/stream?room=c")
    assert_error(refused, 503, "poll GET /api/barrages")
    assert refused.headers["Retry-After"] == "10"
    first.close()  # never iterated: the slot still comes back
    assert slots.open == 0
    second = client.get("/api/stream?room=c", buffered=False)
    assert second.status_code == 200
    chunks = iter(second.response)
    assert next(chunks) == b"retry: 1000\n\n"
    second.close()  # a client going away mid-stream
    assert slots.open == 0


def test_no_streams_when_disabled(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    _, client = build(HomePageOptions(max_streams=0))
    assert_error(client.get("/api/stream?room=c"), 503)
    assert client.get("/api/barrages?room=c").status_code == 200  # polling still works


class FlakyStore(MemoryResultStore):
    def __init__(self) -> None:
        super().__init__()
        self.fail = False

    def since(self, room: str, cursor_token: str | None, limit: int) -> Page:
        if self.fail:
            raise ConnectionError("store unreachable")
        return super().since(room, cursor_token, limit)


def test_store_failure_ends_the_stream_with_a_problem_event(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    store = FlakyStore()
    app, client = build(HomePageOptions(stream_lifetime_s=30, stream_poll_s=0.02), store=store)
    response = client.get("/api/stream?room=f", buffered=False)
    chunks: Iterator[Any] = iter(response.response)
    next(chunks), next(chunks)  # retry and the first page
    store.fail = True
    rest = b"".join(chunks).decode()  # ends promptly instead of running 30 s
    events = parse_events(rest)
    assert events == [{"event": "problem", "data": {"message": "store read failed; reconnecting"}}]
    response.close()
    assert app.extensions["barrage.streams"].open == 0


# -- load runs -----------------------------------------------------------------------------

LOAD = {"message": "load test", "concurrency": 2, "duration": 0.3, "room": "load"}


def follow(client: FlaskClient, run_id: str, timeout: float = 15) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/load/{run_id}").get_json()
        if body["state"] == "finished" or time.monotonic() > deadline:
            return dict(body)
        time.sleep(0.05)


def test_load_run_publishes_and_reports_final_stats(client: FlaskClient) -> None:
    response = post_json(client, "/api/load", LOAD)
    assert response.status_code == 202
    started = response.get_json()
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
    page = client.get("/api/barrages?room=load&limit=5").get_json()
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
def test_load_rejects_bad_fields(client: FlaskClient, body: object, field: str, message: str) -> None:
    error = assert_error(post_json(client, "/api/load", body), 400, message)
    assert error["field"] == field


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"data": "{bad", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": b"\xff", "content_type": "application/json"}, 400, "not UTF-8"),
        ({"data": json.dumps(LOAD), "content_type": "text/plain"}, 415, "Content-Type"),
        ({"data": json.dumps(LOAD | {"message": "x" * 5000}), "content_type": "application/json"}, 413, "larger"),
    ],
)
def test_load_rejects_bad_bodies(client: FlaskClient, kwargs: dict[str, Any], status: int, message: str) -> None:
    assert_error(client.post("/api/load", **kwargs), status, message)


def test_one_run_per_client(client: FlaskClient) -> None:
    first = post_json(client, "/api/load", LOAD | {"duration": 30})
    assert first.status_code == 202
    error = assert_error(post_json(client, "/api/load", LOAD), 409, "still running")
    assert error["run"] == first.get_json()["id"]
    assert post_json(client, "/api/load", LOAD, remote="10.0.0.2").status_code == 202


def test_starts_are_rate_limited(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    _, client = build(HomePageOptions(load=LoadLimits(starts_per_window=1, window_s=60)))
    first = post_json(client, "/api/load", LOAD | {"duration": 0.05})
    assert first.status_code == 202
    follow(client, first.get_json()["id"])
    refused = post_json(client, "/api/load", LOAD)
    assert_error(refused, 429, "at most 1 load runs per 60 s")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60


def test_active_runs_are_capped(build: Callable[..., tuple[Flask, FlaskClient]]) -> None:
    _, client = build(HomePageOptions(load=LoadLimits(max_active_runs=1)))
    assert post_json(client, "/api/load", LOAD | {"duration": 30}).status_code == 202
    refused = post_json(client, "/api/load", LOAD, remote="10.0.0.9")
    assert_error(refused, 503, "load runs are active")
    assert refused.headers["Retry-After"] == "5"


@pytest.mark.parametrize("run_id", ["0" * 24, "nope", "z" * 300])
def test_unknown_run_is_404(client: FlaskClient, run_id: str) -> None:
    assert_error(client.get(f"/api/load/{run_id}"), 404, "no load run")


def test_wrong_methods_are_json_405(client: FlaskClient) -> None:
    assert_error(client.get("/api/load"), 405)
    assert_error(client.post("/api/stream"), 405)
    assert_error(client.delete("/api/load/" + "0" * 24), 405)
