"""functions.fc bindings with golden FC events, in-process (no server, SQLite in tmp)."""

from __future__ import annotations

import base64
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import functions.fc as fc
from functions.processor import TransientProcessingError

EVENTS = Path(__file__).resolve().parents[2] / "events"


def golden(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


@pytest.fixture(autouse=True)
def instance(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("BARRAGE_DB", str(tmp_path / "barrage.db"))
    monkeypatch.setenv("BARRAGE_BUS", "memory")
    for name in ("KAFKA_SERVER", "OTS_ENDPOINT", "ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        monkeypatch.delenv(name, raising=False)
    fc.reset()
    yield
    fc.reset()


def context(request_id: str = "req-1") -> fc.FcContext:
    return fc.context_from_headers({"x-fc-request-id": request_id, "x-fc-function-name": "barrage-processor"})


def get(path: str, query: dict[str, str]) -> dict[str, Any]:
    event = json.loads(golden("fc_http_event_get.json"))
    event["rawPath"], event["queryParameters"] = path, query
    event["requestContext"]["http"]["path"] = path
    return fc.homepage_http(json.dumps(event).encode(), context())


def test_kafka_batch_stores_valid_records_and_reports_invalid_ones() -> None:
    result = fc.process(golden("fc_kafka_batch.json"), context())
    assert (result["stored"], result["rejected"], result["failed"]) == (2, 1, 0)
    rejected = [r for r in result["results"] if r["status"] == "rejected"]
    assert rejected[0]["reason"].startswith("room:")
    page = json.loads(get("/api/barrages", {"room": "room-1"})["body"])
    assert [item["text"] for item in page["items"]] == ["hello from kafka", "second"]


def test_redelivered_batch_is_duplicates_not_double_writes() -> None:
    fc.process(golden("fc_kafka_batch.json"), context())
    again = fc.process(golden("fc_kafka_batch.json"), context("req-2"))
    assert (again["stored"], again["duplicate"]) == (0, 2)


@pytest.mark.parametrize("name,room", [("fc_kafka_batch_strings.json", "room-2"), ("fc_kafka_rawdata.json", "room-3")])
def test_string_elements_and_rawdata_form(name: str, room: str) -> None:
    assert fc.process(golden(name), context())["stored"] == 1
    assert len(json.loads(get("/api/barrages", {"room": room})["body"])["items"]) == 1


def test_direct_invocation_of_a_barrage_object() -> None:
    result = fc.process(json.dumps({"room": "r1", "user": "u1", "text": "direct"}).encode(), context())
    assert result["stored"] == 1


def test_not_json_is_a_function_error_with_a_clear_message() -> None:
    with pytest.raises(fc.InvalidEvent, match="processor: event is not valid JSON"):
        fc.process(b"\x00not json", context())


def test_a_transient_store_failure_raises_so_fc_retries_the_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from handlers.ports import PutResult, PutStatus

    store = fc.services().store

    def failing(results: Any) -> list[PutResult]:
        return [PutResult(r.id, PutStatus.FAILED, "throttled") for r in results]

    monkeypatch.setattr(store, "put_many", failing)
    with pytest.raises(TransientProcessingError, match="retry"):
        fc.process(golden("fc_kafka_batch.json"), context())


def test_fc3_http_event_posts_then_reads_back() -> None:
    answer = fc.homepage_http(golden("fc_http_event.json"), context())
    assert answer["statusCode"] == 202 and answer["isBase64Encoded"] is False
    assert answer["headers"]["Content-Type"].startswith("application/json")
    answer = fc.homepage_http(golden("fc_http_event_base64.json"), context())
    assert answer["statusCode"] == 202
    items = json.loads(get("/api/barrages", {"room": "room-9", "limit": "10"})["body"])["items"]
    assert sorted(i["text"] for i in items) == ["base64 body é", "via fc3 http"]


def test_http_event_rejects_something_else() -> None:
    with pytest.raises(fc.InvalidEvent, match="not an HTTP event"):
        fc.homepage_http(b'{"hello": 1}', context())


def test_raw_path_is_url_decoded_and_query_joined_values_pass_through() -> None:
    event = json.loads(golden("fc_http_event_get.json"))
    event["rawPath"] = "/api/b%C3%A4rrages%2Fx"
    event["queryParameters"] = {"p": "v1,v2", "q": ["a", "b"]}
    event["headers"] = {"X-Multi": ["1", "2"]}
    request = fc.infer_request(event)
    assert request.path == "/api/b\u00e4rrages/x".encode().decode("latin-1")
    assert request.query_string == "p=v1,v2&q=a&q=b"
    environ = fc.wsgi_environ(request)
    assert environ["HTTP_X_MULTI"] == "1,2" and environ["fc.request_uri"].startswith("/api/b%C3%A4rrages")


def test_binary_response_is_base64_and_text_is_not() -> None:
    png = b"\x89PNG\r\n\x1a\n\x00\xff"
    out = fc.http_result(fc.HttpResponse(200, [("Content-Type", "image/png"), ("Set-Cookie", "a=1"),
                                                ("Set-Cookie", "b=2")], png))
    assert out["isBase64Encoded"] is True and base64.b64decode(out["body"]) == png
    assert out["headers"]["Set-Cookie"] == "a=1,b=2"
    text = fc.http_result(fc.HttpResponse(200, [("Content-Type", "text/plain; charset=utf-8")], "é".encode()))
    assert text == {"statusCode": 200, "headers": {"Content-Type": "text/plain; charset=utf-8"},
                    "isBase64Encoded": False, "body": "é"}


def test_api_gateway_event_shape_is_inferred() -> None:
    event = {"path": "/healthz", "httpMethod": "GET", "headers": {}, "queryParameters": {}, "body": "",
             "isBase64Encoded": False}
    assert fc.homepage_http(json.dumps(event), context())["statusCode"] == 200


def test_wsgi_binding_with_the_fc_environ() -> None:
    environ: dict[str, Any] = json.loads(golden("fc_wsgi_environ.json"))
    environ["wsgi.input"] = io.BytesIO(environ.pop("body").encode())
    environ.update({"wsgi.url_scheme": "http", "wsgi.errors": io.StringIO(), "wsgi.version": (1, 0),
                    "wsgi.multithread": False, "wsgi.multiprocess": False, "wsgi.run_once": False,
                    "fc.context": context()})
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"] = status

    body = b"".join(fc.homepage_wsgi(environ, start_response))
    assert int(seen["status"].split()[0]) == 200 and json.loads(body)["status"] == "ok"


def test_wsgi_binding_posts_a_body_and_stops_at_its_length() -> None:
    body = json.dumps({"room": "wsgi-room", "user": "u", "text": "via wsgi"}).encode()
    environ: dict[str, Any] = {
        "REQUEST_METHOD": "POST", "PATH_INFO": "/api/barrages", "QUERY_STRING": "", "SERVER_NAME": "FCRUNTIME",
        "SERVER_PORT": "9000", "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)),
        # More bytes than CONTENT_LENGTH (a keep-alive socket): the binding must not read past it.
        "wsgi.input": io.BytesIO(body + b"NEXT REQUEST"), "wsgi.url_scheme": "http", "fc.context": context(),
    }
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    answer = json.loads(b"".join(fc.homepage_wsgi(environ, start_response)))
    assert seen["status"] == "202 Accepted" and len(answer["accepted"]) == 1
    assert seen["headers"]["Content-Type"] == "application/json"
    assert environ["wsgi.input"].read() == b"NEXT REQUEST"


def test_fc_homepage_never_streams_and_tells_the_page_to_poll() -> None:
    stream = get("/api/stream", {"room": "r"})
    assert stream["statusCode"] == 503
    assert "does not stream" in json.loads(stream["body"])["error"]["message"]
    page = get("/", {})
    assert page["statusCode"] == 200 and '<meta name="barrage-stream" content="off">' in page["body"]


def test_a_non_ascii_path_is_a_json_404() -> None:
    answer = get("/static/b%C3%A4d.js", {})
    assert answer["statusCode"] == 404 and json.loads(answer["body"])["error"]["status"] == 404


def test_credentials_context_first_then_env() -> None:
    ctx = fc.context_from_headers({"x-fc-access-key-id": "STS.id", "x-fc-access-key-secret": "s",
                                   "x-fc-security-token": "tok"})
    assert fc.credentials_from(ctx, {}) == fc.Credentials("STS.id", "s", "tok")
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-s",
           "ALIBABA_CLOUD_SECURITY_TOKEN": "env-t"}
    assert fc.credentials_from(fc.context_from_headers({}), env) == fc.Credentials("env-id", "env-s", "env-t")
    assert fc.credentials_from(None, {}) is None


def test_context_from_headers_has_every_runtime_field() -> None:
    ctx = fc.context_from_headers({
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
    fc.initializer(context())
    first = fc.services()
    fc.process(golden("fc_kafka_rawdata.json"), context())
    assert fc.services() is first
