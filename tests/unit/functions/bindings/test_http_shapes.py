"""FC 3.0 HTTP events, API Gateway events and FC 2.0 WSGI calls through one ASGI app."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, ClassVar

import pytest

from functions.app import App
from functions.bindings import InvalidInvocation
from functions.bindings.api_gateway import ApiGatewayEvent
from functions.bindings.fc2_wsgi import Fc2Wsgi
from functions.bindings.fc3_http import FC3HttpEvent
from functions.fc import context_from_headers
from tests.unit.functions.echo_app import echo

EVENTS = Path(__file__).resolve().parents[3] / "events"
CONTEXT = context_from_headers({"x-fc-request-id": "req-7"})

app: App[None] = App("echo", module=__name__)
web = app.http("web", asgi=echo)


def golden(name: str) -> dict[str, Any]:
    event: dict[str, Any] = json.loads((EVENTS / name).read_text(encoding="utf-8"))
    return event


def test_fc3_event_becomes_the_request_and_the_answer_the_fc3_shape() -> None:
    event = golden("fc_http_event.json")
    assert FC3HttpEvent.infer(event, CONTEXT) and not ApiGatewayEvent.infer(event, CONTEXT)
    answer = web(json.dumps(event).encode(), CONTEXT)
    assert answer["statusCode"] == 201 and answer["isBase64Encoded"] is False
    assert answer["headers"]["set-cookie"] == "a=1,b=2"
    seen = json.loads(answer["body"])
    assert (seen["method"], seen["path"], seen["client"]) == ("POST", "/api/barrages", ["203.0.113.7", 0])
    assert json.loads(seen["body"])["text"] == "via fc3 http"
    assert seen["headers"]["content-type"] == "application/json" and seen["request_id"] == "req-7"


def test_fc3_raw_path_is_decoded_for_the_app_and_kept_raw() -> None:
    event = golden("fc_http_event_get.json")
    event["rawPath"] = "/a%20b/%E5%BC%B9"
    event["queryParameters"] = {"room": "r 1", "tag": ["x", "y"]}
    seen = json.loads(web(event, CONTEXT)["body"])
    assert (seen["path"], seen["raw_path"]) == ("/a b/弹", "/a%20b/%E5%BC%B9")
    assert seen["query"] == "room=r%201&tag=x&tag=y"


def test_base64_bodies_in_and_out() -> None:
    event = golden("fc_http_event_base64.json")
    seen = json.loads(web(event, CONTEXT)["body"])
    assert seen["body"] == base64.b64decode(event["body"]).decode()
    event["rawPath"] = event["requestContext"]["http"]["path"] = "/binary"
    answer = web(event, CONTEXT)
    assert answer["isBase64Encoded"] is True and base64.b64decode(answer["body"]) == b"\x89PNG\x00\xff"


def test_api_gateway_event() -> None:
    event = {"path": "/api/x", "httpMethod": "get", "headers": {"Accept": "*/*"},
             "queryParameters": {"q": "1"}, "body": "", "isBase64Encoded": False}
    answer = web(json.dumps(event), CONTEXT)
    seen = json.loads(answer["body"])
    assert (seen["method"], seen["path"], seen["query"]) == ("GET", "/api/x", "q=1")


def test_wsgi_call_of_fc2() -> None:
    raw = golden("fc_wsgi_environ.json")
    body = raw.pop("body").encode()
    environ = {**raw, "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)), "fc.context": CONTEXT}
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.update(status=status, headers=headers)

    assert Fc2Wsgi.infer(environ, start_response)
    chunks = web(environ, start_response)
    assert started["status"] == "201 Created"
    assert ("set-cookie", "a=1") in started["headers"] and ("set-cookie", "b=2") in started["headers"]
    seen = json.loads(b"".join(chunks))
    assert seen["method"] == raw["REQUEST_METHOD"] and seen["request_id"] == "req-7"


def test_an_unknown_shape_names_what_was_seen() -> None:
    with pytest.raises(InvalidInvocation, match=r"no invocation shape \(fc2-wsgi, fc3-http, api-gateway\) "
                                                r"recognises a JSON object with keys \['hello'\]"):
        web(b'{"hello": 1}', CONTEXT)


def test_bad_base64_is_a_clear_error() -> None:
    event = golden("fc_http_event.json")
    event.update(body="***", isBase64Encoded=True)
    with pytest.raises(InvalidInvocation, match="not base64"):
        web(event, CONTEXT)


class PathOnly:
    """A user-supplied shape: ``{"go": "/path"}`` is a GET of that path."""

    name: ClassVar[str] = "path-only"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, dict) and set(event) == {"go"}

    @classmethod
    def request(cls, event: Any, context: Any) -> Any:
        from functions.asgi import HttpRequest

        return HttpRequest("GET", event["go"], event["go"], "", [], b"")

    @classmethod
    def respond(cls, response: Any, event: Any, context: Any) -> Any:
        return response.status


def test_users_add_their_own_shapes() -> None:
    own: App[None] = App("own", module=__name__)
    function = own.http("web", asgi=echo, shapes=(PathOnly, FC3HttpEvent))
    assert function({"go": "/x"}, None) == 201


class SmallWsgi(Fc2Wsgi):
    max_body_bytes = 1000


class CountingStream:
    """``wsgi.input`` of a chunked body (no length): ``total`` bytes, counting what was read of it."""

    def __init__(self, total: int) -> None:
        self.left, self.read_bytes = total, 0

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        self.left -= size
        self.read_bytes += size
        return b"b" * size


def wsgi_call(stream: Any, length: str | None = None) -> tuple[dict[str, Any], bytes]:
    raw = golden("fc_wsgi_environ.json")
    raw.pop("body")
    environ = {**raw, "wsgi.input": stream, "fc.context": CONTEXT}
    environ.pop("CONTENT_LENGTH", None)
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    started: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        started.update(status=status, headers=headers)

    limited: App[None] = App("limited", module=__name__)
    function = limited.http("web", asgi=echo, shapes=(SmallWsgi,))
    return started, b"".join(function(environ, start_response))


def test_a_chunked_wsgi_body_within_the_limit_is_read_whole() -> None:
    started, body = wsgi_call(CountingStream(1000))
    assert started["status"] == "201 Created"
    assert json.loads(body)["body"] == "b" * 1000


def test_a_chunked_wsgi_body_past_the_limit_is_413_without_reading_beyond_it() -> None:
    stream = CountingStream(50 * 1024 * 1024)
    started, body = wsgi_call(stream)
    assert started["status"].startswith("413 ")
    assert json.loads(body) == {"error": {"status": 413, "message": "body is larger than 1000 bytes"}}
    assert stream.read_bytes == 1001  # one byte past the limit shows it is over; nothing more is held


def test_a_declared_length_past_the_limit_is_413_before_reading() -> None:
    stream = CountingStream(5000)
    started, body = wsgi_call(stream, "5000")
    assert started["status"].startswith("413") and stream.read_bytes == 0
    assert json.loads(body)["error"]["status"] == 413


def test_a_content_length_that_is_not_a_number_is_400() -> None:
    started, body = wsgi_call(io.BytesIO(b"abc"), "3 apples")
    assert started["status"] == "400 Bad Request"
    assert json.loads(body)["error"] == {"status": 400, "message": "Content-Length is not a number: '3 apples'"}


def test_the_fc2_default_limit_is_fcs_own() -> None:
    assert Fc2Wsgi.max_body_bytes == 32 * 1024 * 1024
