"""The HomePage API through functions-framework's own app, as ``functions-framework`` serves it."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient

from tests.integration.functions.conftest import ClientFactory


@pytest.fixture
def client(ff_client: ClientFactory) -> FlaskClient:
    return ff_client("homepage", BARRAGE_MASKED_WORDS="spam")


def post(client: FlaskClient, body: object) -> tuple[int, dict[str, Any]]:
    response = client.post("/api/barrages", data=json.dumps(body), content_type="application/json")
    return response.status_code, response.get_json()


def test_posted_barrage_comes_back_cleaned(client: FlaskClient) -> None:
    status, body = post(client, {"room": "r1", "user": "u1", "text": "  buy\u200b  SPAM  now "})
    assert status == 202 and len(body["accepted"]) == 1
    page = client.get("/api/barrages?room=r1").get_json()
    assert [item["text"] for item in page["items"]] == ["buy **** now"]
    assert page["items"][0]["id"] == body["accepted"][0]["id"]
    assert page["items"][0]["masked_words"] == 1


def test_list_with_rejections_reports_each(client: FlaskClient) -> None:
    items = [{"room": "r1", "user": "u1", "text": "ok"}, {"room": "bad room", "user": "u", "text": "x"}]
    status, body = post(client, items)
    assert status == 202
    assert body["rejected"] == [{"index": 1, "field": "room", "reason": "must match [A-Za-z0-9_-]{1,64}"}]


def test_nothing_valid_is_400_with_reason(client: FlaskClient) -> None:
    status, body = post(client, {"room": "r1", "user": "u1"})
    assert status == 400
    assert body["error"]["message"] == "text: is required"


def test_cursor_paging(client: FlaskClient) -> None:
    post(client, [{"room": "r2", "user": "u", "text": f"m{i}"} for i in range(5)])
    first = client.get("/api/barrages?room=r2&limit=2").get_json()
    assert [i["text"] for i in first["items"]] == ["m3", "m4"]
    post(client, {"room": "r2", "user": "u", "text": "m5"})
    after = client.get(f"/api/barrages?room=r2&since={first['cursor']}").get_json()
    assert [i["text"] for i in after["items"]] == ["m5"]


def test_healthz(client: FlaskClient) -> None:
    assert client.get("/healthz").get_json() == {"status": "ok", "bus": "memory"}


@pytest.mark.parametrize(
    ("kwargs", "status", "message"),
    [
        ({"data": "{bad", "content_type": "application/json"}, 400, "not valid JSON"),
        ({"data": b"\xff\xfe", "content_type": "application/json"}, 400, "not UTF-8"),
        ({"data": "text", "content_type": "text/plain"}, 415, "Content-Type"),
        ({"data": "42", "content_type": "application/json"}, 400, "barrage object or a list"),
        ({"data": "[]", "content_type": "application/json"}, 400, "empty"),
        ({"data": json.dumps([{}] * 501), "content_type": "application/json"}, 413, "at most 500"),
        ({"data": "x" * 2_000_000, "content_type": "application/json"}, 413, "larger than"),
    ],
)
def test_bad_bodies_are_4xx_json(client: FlaskClient, kwargs: dict[str, Any], status: int, message: str) -> None:
    response = client.post("/api/barrages", **kwargs)
    assert response.status_code == status
    assert message in response.get_json()["error"]["message"]


@pytest.mark.parametrize(
    ("query", "parameter"),
    [("", "room"), ("room=a b", "room"), ("room=r&limit=0", "limit"), ("room=r&limit=x", "limit"),
     ("room=r&since=garbage", "since")],
)
def test_bad_queries_are_400(client: FlaskClient, query: str, parameter: str) -> None:
    response = client.get(f"/api/barrages?{query}")
    assert response.status_code == 400
    assert response.get_json()["error"]["parameter"] == parameter


def test_unknown_path_and_method_are_json(client: FlaskClient) -> None:
    assert client.get("/nope").status_code == 404
    assert client.delete("/api/barrages").status_code == 405
    assert "error" in client.get("/nope").get_json()
