"""The real fc2.Client against the local FC API (loopback only), functions from s.yaml."""

from __future__ import annotations

import base64
import json
import textwrap
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fc2
import pytest

from local.fc.api import LocalFC, LocalFCServer
from local.fc.syaml import load
from tests.waiting import wait_for

REPO = Path(__file__).resolve().parents[3]
EVENTS = REPO / "tests" / "events"
KEY_ID, SECRET = "test-key", "test-secret"
pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFCServer]:
    db = tmp_path_factory.mktemp("fc") / "barrage.db"
    env = {"BARRAGE_DB": str(db), "BARRAGE_BUS": "memory"}
    import os

    environ = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OTS_", "ALIBABA_CLOUD_"))}
    environ.update(env)
    local = LocalFC(load(REPO / "s.yaml", environ, missing="empty"), REPO, {KEY_ID: SECRET}, async_retry_delay_s=0.05,
                    environ=environ)
    with LocalFCServer(local) as running:
        yield running


@pytest.fixture
def client(server: LocalFCServer) -> Any:
    return fc2.Client(endpoint=server.endpoint, accessKeyID=KEY_ID, accessKeySecret=SECRET, Timeout=60)


def sync(client: Any, function: str, payload: bytes, **headers: str) -> Any:
    return client.invoke_function("barrage", function, payload=payload,
                                  headers={"x-fc-invocation-type": "Sync", **headers})


def fetch_room(server: LocalFCServer, room: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(f"{server.endpoint}/http/barrage-homepage/api/barrages?room={room}") as answer:
        return list(json.loads(answer.read())["items"])


def test_sync_processor_with_log_tail(client: Any, server: LocalFCServer) -> None:
    batch = (EVENTS / "fc_kafka_batch.json").read_bytes()
    response = sync(client, "barrage-processor", batch, **{"x-fc-log-type": "Tail"})
    result = json.loads(response.data)
    assert (result["ok"], result["reject"]) == (2, 1)
    tail = base64.b64decode(response.headers["x-fc-log-result"]).decode()
    request_id = response.headers["x-fc-request-id"]
    assert f"FC Invoke Start RequestId: {request_id}" in tail and f"FC Invoke End RequestId: {request_id}" in tail
    assert "reject" in tail
    assert [i["text"] for i in fetch_room(server, "room-1")] == ["hello from kafka", "second"]


def test_async_processor(client: Any, server: LocalFCServer) -> None:
    payload = json.dumps({"room": "async-room", "user": "u", "text": "later"}).encode()
    response = client.invoke_function("barrage", "barrage-processor", payload=payload,
                                      headers={"x-fc-invocation-type": "Async"})
    record = server.fc.async_records[response.headers["x-fc-request-id"]]
    assert record.done.wait(30) and record.status == "Succeeded"
    assert [i["text"] for i in fetch_room(server, "async-room")] == ["later"]


def test_function_error_is_unhandled_invocation_error(client: Any) -> None:
    with pytest.raises(fc2.fc_exceptions.FcError) as caught:
        sync(client, "barrage-processor", b"this is not json")
    error = json.loads(caught.value.message)
    assert error["errorType"] == "InvalidInvocation" and "not JSON" in error["errorMessage"]
    assert isinstance(error["stackTrace"], list)


def test_homepage_sync_and_async_with_fc3_http_events(client: Any, server: LocalFCServer) -> None:
    event = json.loads((EVENTS / "fc_http_event.json").read_text())
    event["body"] = json.dumps({"room": "hp-room", "user": "u", "text": "sync"})
    answer = json.loads(sync(client, "barrage-homepage", json.dumps(event).encode()).data)
    assert answer["statusCode"] == 202
    event["body"] = json.dumps({"room": "hp-room", "user": "u", "text": "async"})
    client.invoke_function("barrage", "barrage-homepage", payload=json.dumps(event).encode(),
                           headers={"x-fc-invocation-type": "Async"})
    wait_for(lambda: len(fetch_room(server, "hp-room")) == 2)


def test_unknown_function_and_service_are_404_json(client: Any) -> None:
    with pytest.raises(fc2.fc_exceptions.FcError) as caught:
        sync(client, "nope", b"{}")
    assert caught.value.status_code == 404 and caught.value.err_code == "FunctionNotFound"
    with pytest.raises(fc2.fc_exceptions.FcError) as caught:
        client.invoke_function("other", "barrage-processor", payload=b"{}")
    assert caught.value.err_code == "ServiceNotFound"


@pytest.mark.parametrize("key_id,secret,code", [(KEY_ID, "wrong", "SignatureNotMatch"),
                                                ("unknown", SECRET, "InvalidAccessKeyId")])
def test_wrong_key_is_403(server: LocalFCServer, key_id: str, secret: str, code: str) -> None:
    bad = fc2.Client(endpoint=server.endpoint, accessKeyID=key_id, accessKeySecret=secret)
    with pytest.raises(fc2.fc_exceptions.FcError) as caught:
        bad.invoke_function("barrage", "barrage-processor", payload=b"{}")
    assert caught.value.status_code == 403 and caught.value.err_code == code


def test_http_trigger_paths(client: Any, server: LocalFCServer) -> None:
    with urllib.request.urlopen(f"{server.endpoint}/healthz") as answer:  # the only HTTP function at /
        assert json.loads(answer.read())["status"] == "ok"
    response = client.do_http_request("GET", "barrage", "barrage-homepage", "/healthz")
    assert response.status_code == 200 and response.json()["status"] == "ok"
    assert response.headers["x-fc-request-id"]


@pytest.fixture
def flaky(tmp_path: Path) -> Iterator[LocalFCServer]:
    """A function that fails on its first two calls, and a WSGI HTTP function."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "flaky.py").write_text(textwrap.dedent("""
        import json
        calls = []
        def handler(event, context):
            calls.append(context.retry_count)
            if len(calls) < 3:
                raise RuntimeError(f"attempt {len(calls)} fails")
            return {"calls": calls, "event": json.loads(event)}
        def wsgi(environ, start_response):
            start_response("200 OK", [("Content-Type", "application/octet-stream")])
            ctx = environ["fc.context"]
            return [environ["PATH_INFO"].encode() + b"|" + environ["SERVER_NAME"].encode() + b"|"
                    + ctx.function.name.encode() + b"|" + bytes([0, 255])]
    """))
    (tmp_path / "s.yaml").write_text(textwrap.dedent("""
        edition: 3.0.0
        name: svc
        resources:
          flaky:
            component: fc3
            props: {region: cn-hangzhou, functionName: flaky, runtime: python3.10, code: ./code,
                    handler: flaky.handler, asyncInvokeConfig: {maxAsyncRetryAttempts: 3}}
          web:
            component: fc3
            props:
              region: cn-hangzhou
              functionName: web
              runtime: python3.10
              code: ./code
              handler: flaky.wsgi
              triggers: [{triggerName: h, triggerType: http, triggerConfig: {authType: function, methods: [GET]}}]
    """))
    local = LocalFC(load(tmp_path / "s.yaml", {}), code, {KEY_ID: SECRET}, async_retry_delay_s=0.01,
                    http_kinds={"web": "wsgi"})
    with LocalFCServer(local) as running:
        yield running


def test_async_retries_on_function_error_like_fc(flaky: LocalFCServer) -> None:
    client = fc2.Client(endpoint=flaky.endpoint, accessKeyID=KEY_ID, accessKeySecret=SECRET)
    response = client.invoke_function("svc", "flaky", payload=b'{"n": 1}', headers={"x-fc-invocation-type": "Async"})
    assert response.headers.get("x-fc-request-id")
    record = flaky.fc.async_records[response.headers["x-fc-request-id"]]
    assert record.done.wait(30)
    assert record.status == "Succeeded" and record.attempts == 3
    assert json.loads(record.result) == {"calls": [0, 1, 2], "event": {"n": 1}}


def test_wsgi_http_function_with_signed_trigger(flaky: LocalFCServer) -> None:
    client = fc2.Client(endpoint=flaky.endpoint, accessKeyID=KEY_ID, accessKeySecret=SECRET)
    response = client.do_http_request("GET", "svc", "web", "/a/b", params={"x": "1"})
    assert response.status_code == 200
    assert response.content == b"/a/b|FCRUNTIME|web|\x00\xff"
    unsigned = fc2.Client(endpoint=flaky.endpoint, accessKeyID=KEY_ID, accessKeySecret="nope")
    assert unsigned.do_http_request("GET", "svc", "web", "/a").status_code == 403
    assert client.do_http_request("POST", "svc", "web", "/a").status_code == 403  # method not in the trigger
