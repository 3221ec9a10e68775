"""The HomePage API through functions-framework's own ASGI app, as ``functions-framework --asgi`` serves it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from starlette.testclient import TestClient

from tests.asgi_server import serving
from tests.integration.functions.conftest import AsgiClientFactory


@pytest.fixture
def client(ff_asgi_client: AsgiClientFactory) -> TestClient:
    return ff_asgi_client("homepage", BARRAGE_MASKED_WORDS="spam")


def post(client: TestClient, body: object) -> tuple[int, dict[str, Any]]:
    response = client.post("/api/barrages", content=json.dumps(body), headers={"Content-Type": "application/json"})
    return response.status_code, response.json()


def test_posted_barrage_comes_back_cleaned(client: TestClient) -> None:
    status, body = post(client, {"room": "r1", "user": "u1", "text": "  buy\u200b  SPAM  now "})
    assert status == 202 and len(body["accepted"]) == 1
    page = client.get("/api/barrages?room=r1").json()
    assert [item["text"] for item in page["items"]] == ["buy **** now"]
    assert page["items"][0]["id"] == body["accepted"][0]["id"]
    assert page["items"][0]["masked_words"] == 1


def test_list_with_rejections_reports_each(client: TestClient) -> None:
    items = [{"room": "r1", "user": "u1", "text": "ok"}, {"room": "bad room", "user": "u", "text": "x"}]
    status, body = post(client, items)
    assert status == 202
    assert body["rejected"] == [{"index": 1, "field": "room", "reason": "must match [A-Za-z0-9_-]{1,64}"}]


def test_nothing_valid_is_400_with_reason(client: TestClient) -> None:
    status, body = post(client, {"room": "r1", "user": "u1"})
    assert status == 400
    assert body["error"]["message"] == "text: is required"


def test_cursor_paging(client: TestClient) -> None:
    post(client, [{"room": "r2", "user": "u", "text": f"m{i}"} for i in range(5)])
    first = client.get("/api/barrages?room=r2&limit=2").json()
    assert [i["text"] for i in first["items"]] == ["m3", "m4"]
    post(client, {"room": "r2", "user": "u", "text": "m5"})
    after = client.get(f"/api/barrages?room=r2&since={first['cursor']}").json()
    assert [i["text"] for i in after["items"]] == ["m5"]


def test_healthz(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok", "bus": "memory"}


def test_the_page_and_its_headers(client: TestClient) -> None:
    response = client.get("/")
    assert response.status_code == 200 and "<title>barrage</title>" in response.text
    assert "script-src 'self'" in response.headers["Content-Security-Policy"]


@pytest.mark.parametrize(
    ("content", "content_type", "status", "message"),
    [
        ("{bad", "application/json", 400, "not valid JSON"),
        (b"\xff\xfe", "application/json", 400, "not UTF-8"),
        ("text", "text/plain", 415, "Content-Type"),
        ("42", "application/json", 400, "barrage object or a list"),
        ("[]", "application/json", 400, "empty"),
        (json.dumps([{}] * 501), "application/json", 413, "at most 500"),
        ("x" * 2_000_000, "application/json", 413, "larger than"),
        ("[" * 50_000, "application/json", 400, "nested deeper than 32 levels"),
    ],
)
def test_bad_bodies_are_4xx_json(client: TestClient, content: str | bytes, content_type: str, status: int,
                                 message: str) -> None:
    response = client.post("/api/barrages", content=content, headers={"Content-Type": content_type})
    assert response.status_code == status
    assert message in response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("", "room"), ("room=a b", "room"), ("room=r&limit=0", "limit"), ("room=r&limit=x", "limit"),
     ("room=r&since=garbage", "since")],
)
def test_bad_queries_are_400(client: TestClient, query: str, parameter: str) -> None:
    response = client.get(f"/api/barrages?{query}")
    assert response.status_code == 400
    assert response.json()["error"]["parameter"] == parameter


def test_unknown_path_and_method_are_json(client: TestClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.delete("/api/barrages").status_code == 405
    assert "error" in client.get("/nope").json()


def test_event_streams_pass_through_functions_framework(ff_asgi_client: AsgiClientFactory) -> None:
    """Streamed answers go through the target unbuffered: the first bytes arrive long before the end."""
    import httpx2 as httpx
    from functions_framework.aio import create_asgi_app

    from functions.main import FUNCTIONS_SOURCE_FILE

    ff_asgi_client("homepage")  # sets the environment up
    app = create_asgi_app(target="homepage", source=str(FUNCTIONS_SOURCE_FILE))
    with serving(app) as url, httpx.Client(base_url=url, timeout=10) as live, \
            live.stream("GET", "/api/stream?room=ff") as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = response.iter_lines()
        assert next(lines) == "retry: 1000"
        sent = live.post("/api/barrages", json={"room": "ff", "user": "u", "text": "through ff"})
        assert sent.status_code == 202
        for line in lines:
            if line.startswith("data:") and "through ff" in line:
                break
        else:
            pytest.fail("the stream ended without the barrage")
