"""The real FC 3.0 client (alibabacloud-fc20230330) against the local FC 3.0 API, loopback only.

Functions of each kind FC runs: a built-in python3.10 handler, and an App behind the package's
``bootstrap`` on a custom runtime (started with CAPort, POST /invoke, HTTP passed through).
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alibabacloud_fc20230330 import models
from alibabacloud_fc20230330.client import Client
from alibabacloud_tea_openapi import models as openapi
from alibabacloud_tea_openapi.exceptions import ClientException
from darabonba.runtime import RuntimeOptions

from local.fc.api import LocalFC, LocalFCServer
from local.fc.syaml import load
from tests.waiting import wait_for

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
EVENTS = REPO / "tests" / "events"
KEY_ID, SECRET = "test-key", "test-secret"
APP = "tests.integration.local.fc3_app"

S_YAML = f"""
edition: 3.0.0
name: fc3probe
resources:
  echo:
    component: fc3
    props: {{region: cn-hangzhou, functionName: echo, runtime: python3.10, code: ./,
            handler: {APP}.echo, timeout: 10}}
  tally:
    component: fc3
    props:
      region: cn-hangzhou
      functionName: tally
      runtime: custom.debian10
      code: ./
      handler: bootstrap
      customRuntimeConfig: {{port: 9000}}
      instanceConcurrency: 4
      instanceLifecycleConfig: {{initializer: {{handler: {APP}.app.initializer, timeout: 10}}}}
      environmentVariables: {{FUNCTIONS_APP: {APP}, FUNCTION_TARGET: tally, WORKERS: '1'}}
  web:
    component: fc3
    props:
      region: cn-hangzhou
      functionName: web
      runtime: custom.debian10
      code: ./
      handler: bootstrap
      customRuntimeConfig: {{port: 9000}}
      environmentVariables: {{FUNCTIONS_APP: {APP}, FUNCTION_TARGET: web, WORKERS: '1'}}
      triggers: [{{triggerName: http, triggerType: http, triggerConfig: {{authType: anonymous, methods: [GET]}}}}]
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalFCServer]:
    s_yaml = tmp_path_factory.mktemp("fc3") / "s.yaml"
    s_yaml.write_text(textwrap.dedent(S_YAML))
    local = LocalFC(load(s_yaml, {}), REPO, {KEY_ID: SECRET}, async_retry_delay_s=0.05,
                    environ={"PATH": "/usr/bin:/bin"})
    with LocalFCServer(local) as running:
        yield running


def fc3_client(server: LocalFCServer, key_id: str = KEY_ID, secret: str = SECRET) -> Any:
    config = openapi.Config(access_key_id=key_id, access_key_secret=secret, region_id="cn-hangzhou",
                            endpoint=f"{server.host}:{server.port}", protocol="http", read_timeout=30_000)
    return Client(config)


def invoke(client: Any, function: str, payload: bytes, qualifier: str | None = None, **headers: str) -> Any:
    request = models.InvokeFunctionRequest(body=io.BytesIO(payload), qualifier=qualifier)
    invoke_headers = models.InvokeFunctionHeaders(
        x_fc_invocation_type=headers.get("invocation_type", "Sync"), x_fc_log_type=headers.get("log_type"),
        x_fc_async_task_id=headers.get("task_id"))
    return client.invoke_function_with_options(function, request, invoke_headers, RuntimeOptions())


def test_sync_builtin_with_log_tail_and_qualifier(server: LocalFCServer) -> None:
    response = invoke(fc3_client(server), "echo", b"hello", qualifier="LATEST", log_type="Tail")
    assert response.status_code == 200 and "x-fc-error-type" not in response.headers
    answer = json.loads(response.body.read())
    request_id = response.headers["x-fc-request-id"]
    assert answer == {"event": "hello", "request_id": request_id, "function": "echo", "qualifier": "LATEST"}
    tail = base64.b64decode(response.headers["x-fc-log-result"]).decode()
    assert f"FC Invoke Start RequestId: {request_id}" in tail and "echo got 5 bytes" in tail
    assert f"FC Invoke End RequestId: {request_id}" in tail


def test_function_error_is_a_200_with_the_error_type(server: LocalFCServer) -> None:
    response = invoke(fc3_client(server), "echo", b"boom")
    assert response.status_code == 200 and response.headers["x-fc-error-type"] == "UnhandledInvocationError"
    error = json.loads(response.body.read())
    assert error["errorType"] == "RuntimeError" and "told to fail" in error["errorMessage"]


def test_custom_runtime_sync_async_and_log_tail(server: LocalFCServer) -> None:
    client = fc3_client(server)
    response = invoke(client, "tally", b'{"n": 1}', log_type="Tail")
    answer = json.loads(response.body.read())
    assert (answer["ok"], answer["retry"]) == (1, 0)
    request_id = response.headers["x-fc-request-id"]
    tail = base64.b64decode(response.headers["x-fc-log-result"]).decode()
    assert tail.startswith(f"FC Invoke Start RequestId: {request_id}\n") and "tally saw record" in tail
    assert tail.rstrip().endswith(f"FC Invoke End RequestId: {request_id}")
    # The same instance (one server process) serves the next invocation.
    again = json.loads(invoke(client, "tally", b'{"n": 2}').body.read())
    assert again["results"][0]["pid"] == answer["results"][0]["pid"]
    accepted = invoke(client, "tally", b'{"n": 3}', invocation_type="Async", task_id="task-1")
    assert accepted.status_code == 202 and accepted.headers["x-fc-async-task-id"] == "task-1"
    record = server.fc.async_tasks["task-1"]
    assert record.done.wait(30) and record.status == "Succeeded"
    failing = invoke(client, "tally", b'{"fail": true}')
    assert failing.headers["x-fc-error-type"] == "UnhandledInvocationError"


def test_custom_runtime_http_trigger_passes_requests_through(server: LocalFCServer) -> None:
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    connection.request("GET", "/http/web/some/path?x=1")
    answer = connection.getresponse()
    body = json.loads(answer.read())
    assert answer.status == 200 and body["path"] == "/some/path" and body["method"] == "GET"
    assert body["request_id"] == answer.getheader("x-fc-request-id")


def test_custom_runtime_http_answers_stream(server: LocalFCServer, tmp_path: Path) -> None:
    marker = tmp_path / "seen"
    connection = http.client.HTTPConnection(server.host, server.port, timeout=30)
    connection.request("GET", f"/http/web/stream?marker={marker}")
    answer = connection.getresponse()
    assert answer.getheader("content-type") == "text/event-stream"
    assert answer.readline() == b"data: first\n"  # the function is still running: it waits for the marker
    marker.touch()
    assert answer.read() == b"\ndata: after the client saw the first\n\n"


@pytest.mark.parametrize(("qualifier", "code"), [("prod", "AliasNotFound"), ("3", "VersionNotFound")])
def test_unknown_qualifier_is_404(server: LocalFCServer, qualifier: str, code: str) -> None:
    with pytest.raises(ClientException) as caught:
        invoke(fc3_client(server), "echo", b"x", qualifier=qualifier)
    assert caught.value.status_code == 404 and caught.value.code == code


def test_unknown_function_is_404_function_not_found(server: LocalFCServer) -> None:
    with pytest.raises(ClientException) as caught:
        invoke(fc3_client(server), "nope", b"{}")
    assert caught.value.status_code == 404 and caught.value.code == "FunctionNotFound"
    assert caught.value.data["RequestId"] and "nope" in caught.value.data["Message"]


@pytest.mark.parametrize(("key_id", "secret", "code"), [(KEY_ID, "wrong", "SignatureNotMatch"),
                                                        ("unknown", SECRET, "InvalidAccessKeyID")])
def test_wrong_key_is_403(server: LocalFCServer, key_id: str, secret: str, code: str) -> None:
    with pytest.raises(ClientException) as caught:
        invoke(fc3_client(server, key_id, secret), "echo", b"{}")
    assert caught.value.status_code == 403 and caught.value.code == code


def test_other_api_paths_are_errors_never_function_requests(server: LocalFCServer) -> None:
    with pytest.raises(ClientException) as caught:  # a signed call of an API the local FC does not serve
        fc3_client(server).list_functions(models.ListFunctionsRequest())
    assert caught.value.status_code == 404 and caught.value.code == "PathNotSupported"
    for method, path in [("POST", "/2023-03-30/functions/web/invocations"), ("GET", "/2023-03-30/functions"),
                         ("GET", "/2099-01-01/functions/web")]:
        connection = http.client.HTTPConnection(server.host, server.port, timeout=10)
        connection.request(method, path, body=b"{}")
        answer = connection.getresponse()
        error = json.loads(answer.read())
        assert answer.status in (400, 404) and answer.getheader("content-type") == "application/json"
        assert set(error) >= {"Code", "Message"} or set(error) == {"ErrorCode", "ErrorMessage"}, error


def test_barrage_processor_and_homepage_through_the_fc3_client(tmp_path: Path) -> None:
    environ = {"PATH": "/usr/bin:/bin", "BARRAGE_BUS": "memory", "BARRAGE_DB": str(tmp_path / "barrage.db")}
    local = LocalFC(load(REPO / "s.yaml", environ, missing="empty"), REPO, {KEY_ID: SECRET}, environ=environ)
    with LocalFCServer(local) as running:
        client = fc3_client(running)
        batch = (EVENTS / "fc_kafka_batch.json").read_bytes()
        stored = json.loads(invoke(client, "barrage-processor", batch).body.read())
        assert (stored["ok"], stored["reject"]) == (2, 1)
        event = json.loads((EVENTS / "fc_http_event_get.json").read_text())
        event.update(rawPath="/api/barrages", queryParameters={"room": "room-1"})
        event["requestContext"]["http"]["path"] = "/api/barrages"
        response = invoke(client, "barrage-homepage", json.dumps(event).encode())
        assert "x-fc-error-type" not in response.headers, response.body.read()
        answer = json.loads(response.body.read())
        assert answer["statusCode"] == 200
        texts = [item["text"] for item in json.loads(answer["body"])["items"]]
        wait_for(lambda: bool(texts))
        assert texts == ["hello from kafka", "second"]


@pytest.mark.parametrize("api", ["fc3", "fc2"])
def test_barrage_invoke_cli(server: LocalFCServer, api: str) -> None:
    from click.testing import CliRunner

    from local.cli import main

    base = ["invoke", "--endpoint", server.endpoint, "--access-key-id", KEY_ID, "--access-key-secret", SECRET,
            "--service", "fc3probe"] + ([] if api == "fc3" else ["--api", "fc2"])
    result = CliRunner().invoke(main, [*base, "echo", "--payload", "hi", "--log"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["event"] == "hi"
    assert "FC Invoke Start RequestId" in result.stderr
    failed = CliRunner().invoke(main, [*base, "echo", "--payload", "boom"])
    assert failed.exit_code == 1 and "UnhandledInvocationError" in failed.stderr
    missing = CliRunner().invoke(main, [*base, "nope", "--payload", "x"])
    assert missing.exit_code == 1 and "FunctionNotFound" in missing.output
    assert len(missing.output.strip().splitlines()) == 1


def test_barrage_invoke_defaults_to_fc3(server: LocalFCServer) -> None:
    from click.testing import CliRunner

    from local.cli import main

    signed_before = len(server.fc.nonces._seen)  # each FC 3.0 call leaves its signature nonce
    result = CliRunner().invoke(main, ["invoke", "--endpoint", server.endpoint, "--access-key-id", KEY_ID,
                                       "--access-key-secret", SECRET, "echo", "--payload", "x"])
    assert result.exit_code == 0, result.output
    assert len(server.fc.nonces._seen) == signed_before + 1
