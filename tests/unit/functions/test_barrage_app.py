"""Barrage's FC entries (functions.barrage_app) with golden FC events, in-process (no server, SQLite in tmp)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions import barrage_app
from functions.app import InvalidInvocation, RetryBatch
from functions.fc import FcContext, context_from_headers

EVENTS = Path(__file__).resolve().parents[2] / "events"


def golden(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


@pytest.fixture(autouse=True)
def instance(tmp_path: Path) -> Iterator[None]:
    barrage_app.app.configure({"BARRAGE_DB": str(tmp_path / "barrage.db"), "BARRAGE_BUS": "memory"})
    yield
    barrage_app.app.reset()


def context(request_id: str = "req-1") -> FcContext:
    return context_from_headers({"x-fc-request-id": request_id, "x-fc-function-name": "barrage-processor"})


def stored(room: str) -> list[str]:
    return [item.text for item in barrage_app.app.instance().deps.store.latest(room, 10).items]


def get(path: str, query: dict[str, str]) -> dict[str, Any]:
    event = json.loads(golden("fc_http_event_get.json"))
    event["rawPath"], event["queryParameters"] = path, query
    event["requestContext"]["http"]["path"] = path
    answer: dict[str, Any] = barrage_app.homepage(json.dumps(event).encode(), context())
    return answer


def process(payload: bytes, ctx: FcContext | None = None) -> dict[str, Any]:
    result: dict[str, Any] = barrage_app.processor(payload, ctx or context())
    return result


def test_kafka_batch_stores_valid_records_and_reports_invalid_ones() -> None:
    result = process(golden("fc_kafka_batch.json"))
    assert (result["ok"], result["reject"], result["retry"]) == (2, 1, 0)
    rejected = [r for r in result["results"] if r["status"] == "reject"]
    assert rejected[0]["reason"].startswith("room:")
    assert stored("room-1") == ["hello from kafka", "second"]


def test_redelivered_batch_is_duplicates_not_double_writes() -> None:
    process(golden("fc_kafka_batch.json"))
    again = process(golden("fc_kafka_batch.json"), context("req-2"))
    assert (again["ok"], again["duplicate"]) == (0, 2)


@pytest.mark.parametrize("name,room", [("fc_kafka_batch_strings.json", "room-2"), ("fc_kafka_rawdata.json", "room-3")])
def test_string_elements_and_rawdata_form(name: str, room: str) -> None:
    assert process(golden(name))["ok"] == 1
    assert len(stored(room)) == 1


def test_direct_invocation_of_a_barrage_object() -> None:
    result = process(json.dumps({"room": "r1", "user": "u1", "text": "direct"}).encode())
    assert result["ok"] == 1 and stored("r1") == ["direct"]


def test_not_json_is_a_function_error_with_a_clear_message() -> None:
    with pytest.raises(InvalidInvocation, match="the event is not JSON"):
        process(b"\x00not json")


def test_a_transient_store_failure_raises_so_fc_retries_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers.ports import PutResult, PutStatus

    store = barrage_app.app.instance().deps.store

    def failing(results: Any) -> list[PutResult]:
        return [PutResult(r.id, PutStatus.FAILED, "throttled") for r in results]

    monkeypatch.setattr(store, "put_many", failing)
    with pytest.raises(RetryBatch, match="2 of 3 record\\(s\\) to retry"):
        process(golden("fc_kafka_batch.json"))


def test_context_from_headers_has_every_runtime_field() -> None:
    ctx = context_from_headers({
        "x-fc-request-id": "r", "x-fc-function-name": "f", "x-fc-function-handler": "m.h",
        "x-fc-function-memory": "1024", "x-fc-function-timeout": "9", "x-fc-service-name": "s",
        "x-fc-service-logproject": "p", "x-fc-service-logstore": "l", "x-fc-qualifier": "prod",
        "x-fc-version-id": "3", "x-fc-region": "cn-hangzhou", "x-fc-account-id": "42", "x-fc-retry-count": "2"})
    assert (ctx.request_id, ctx.function.name, ctx.function.handler, ctx.function.memory, ctx.function.timeout) == \
        ("r", "f", "m.h", 1024, 9)
    assert (ctx.service.name, ctx.service.log_project, ctx.service.log_store, ctx.service.qualifier,
            ctx.service.version_id) == ("s", "p", "l", "prod", "3")
    assert (ctx.region, ctx.account_id, ctx.retry_count) == ("cn-hangzhou", "42", 2)
    assert ctx.tracing is not None and ctx.logger is not None


def test_initializer_builds_services_once() -> None:
    barrage_app.initializer(context())
    first = barrage_app.app.instance().deps
    process(golden("fc_kafka_rawdata.json"))
    assert barrage_app.app.instance().deps is first


def test_sts_keys_are_read_per_invocation() -> None:
    def keys(n: int) -> FcContext:
        return context_from_headers({"x-fc-access-key-id": f"STS.{n}", "x-fc-access-key-secret": "s",
                                     "x-fc-security-token": f"tok{n}"})

    process(golden("fc_kafka_rawdata.json"), keys(1))
    source = barrage_app.app.instance().credentials
    assert source.current() is not None and source.current().access_key_id == "STS.1"  # type: ignore[union-attr]
    process(golden("fc_kafka_rawdata.json"), keys(2))
    assert source.current().security_token == "tok2"  # type: ignore[union-attr]


def test_fc3_http_event_posts_then_reads_back() -> None:
    answer = barrage_app.homepage(golden("fc_http_event.json"), context())
    assert answer["statusCode"] == 202 and answer["isBase64Encoded"] is False
    assert answer["headers"]["content-type"].startswith("application/json")
    answer = barrage_app.homepage(golden("fc_http_event_base64.json"), context())
    assert answer["statusCode"] == 202
    items = json.loads(get("/api/barrages", {"room": "room-9", "limit": "10"})["body"])["items"]
    assert sorted(i["text"] for i in items) == ["base64 body é", "via fc3 http"]


def test_http_event_rejects_something_else() -> None:
    with pytest.raises(InvalidInvocation, match="no invocation shape"):
        barrage_app.homepage(b'{"hello": 1}', context())


def test_api_gateway_event_shape_is_inferred() -> None:
    event = {"path": "/healthz", "httpMethod": "GET", "headers": {}, "queryParameters": {}, "body": "",
             "isBase64Encoded": False}
    assert barrage_app.homepage(json.dumps(event), context())["statusCode"] == 200


def test_the_page_is_served_as_text_and_the_static_files_with_their_types() -> None:
    page = get("/", {})
    assert page["statusCode"] == 200 and page["isBase64Encoded"] is False and "<html" in page["body"].lower()
    assert "content-security-policy" in {k.lower() for k in page["headers"]}


def test_wsgi_binding_with_the_fc_environ() -> None:
    environ: dict[str, Any] = json.loads(golden("fc_wsgi_environ.json"))
    environ["wsgi.input"] = io.BytesIO(environ.pop("body").encode())
    environ.update({"wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
                    "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
                    "fc.context": context()})
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    body = b"".join(barrage_app.homepage(environ, start_response))
    assert int(seen["status"].split()[0]) == 200 and json.loads(body)["status"] == "ok"


def test_static_files_keep_their_type_and_arrive_as_text() -> None:
    answer = get("/static/app.js", {})
    assert answer["statusCode"] == 200 and "javascript" in answer["headers"]["content-type"]
    assert answer["isBase64Encoded"] is False and "function" in answer["body"]


def wsgi_call(environ: dict[str, Any]) -> tuple[str, dict[str, str], bytes]:
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, {k.lower(): v for k, v in headers}

    body = b"".join(barrage_app.homepage(environ, start_response))
    return seen["status"], seen["headers"], body


def wsgi_environ(method: str, path_info: str, body: bytes = b"", **extra: Any) -> dict[str, Any]:
    return {"REQUEST_METHOD": method, "PATH_INFO": path_info, "QUERY_STRING": "", "SERVER_NAME": "FCRUNTIME",
            "SERVER_PORT": "9000", "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http",
            "fc.context": context(), **extra}


def test_wsgi_binding_posts_a_body_and_reads_no_further_than_its_length() -> None:
    body = json.dumps({"room": "wsgi-room", "user": "u", "text": "via wsgi"}).encode()
    # More bytes than CONTENT_LENGTH (a keep-alive socket): the binding must not read past it.
    environ = wsgi_environ("POST", "/api/barrages", body + b"NEXT REQUEST", CONTENT_TYPE="application/json",
                           CONTENT_LENGTH=str(len(body)))
    status, headers, answer = wsgi_call(environ)
    assert status == "202 Accepted" and len(json.loads(answer)["accepted"]) == 1
    assert headers["content-type"] == "application/json"
    assert environ["wsgi.input"].read() == b"NEXT REQUEST"
    assert stored("wsgi-room") == ["via wsgi"]


def test_a_non_ascii_path_is_a_json_404_on_both_fc_shapes() -> None:
    answer = get("/static/b%C3%A4d.js", {})
    assert answer["statusCode"] == 404 and json.loads(answer["body"])["error"]["status"] == 404
    # WSGI spells the path as the latin-1 characters of its UTF-8 bytes.
    status, _, body = wsgi_call(wsgi_environ("GET", "/static/b\u00e4d.js".encode().decode("latin-1")))
    assert status.startswith("404") and json.loads(body)["error"]["status"] == 404


def test_where_the_runtime_cannot_stream_the_page_polls(tmp_path: Path) -> None:
    # s.yaml sets FUNCTIONS_STREAMING=off on FC's built-in runtimes (they return whole answers).
    barrage_app.app.reset()
    barrage_app.app.configure({"BARRAGE_DB": str(tmp_path / "b.db"), "BARRAGE_BUS": "memory",
                               "FUNCTIONS_STREAMING": "off"})
    stream = get("/api/stream", {"room": "r"})
    assert stream["statusCode"] == 503
    assert "does not stream" in json.loads(stream["body"])["error"]["message"]
    page = get("/", {})
    assert page["statusCode"] == 200 and '<meta name="barrage-stream" content="off">' in page["body"]
