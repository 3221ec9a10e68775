"""CloudEvents over HTTP: decoding (checked against the cloudevents SDK), statuses, the concurrency gate."""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from cloudevents.http import from_http

from functions.app import App, Record, reject, retry
from functions.asgi import HttpRequest, call
from functions.bindings.cloudevents_http import (
    BadDelivery,
    ConcurrencyGate,
    QueueFull,
    decode,
    sink_app,
    status_of,
)
from functions.records import BatchReport, Undecodable, ok

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
BINARY = {"ce-specversion": "1.0", "ce-id": "e1", "ce-source": "/s", "ce-type": "t.x", "ce-subject": "sub",
          "ce-time": "2026-01-01T00:00:00Z", "ce-traceparent": TRACEPARENT,
          "ce-partitionkey": "room-1", "content-type": "application/json"}
STRUCTURED = {"specversion": "1.0", "id": "e2", "source": "/s", "type": "t.x", "time": "2026-01-01T00:00:00Z",
              "datacontenttype": "application/json", "data": {"a": 1}, "key": "k"}


def sdk(headers: dict[str, str], body: bytes) -> tuple[dict[str, Any], Any]:
    event = from_http(headers, body, data_unmarshaller=lambda raw: raw)
    return dict(event.get_attributes()), event.data


def test_binary_mode_agrees_with_the_sdk() -> None:
    (record,), batch = decode(BINARY, b'{"a": 1}')
    assert isinstance(record, Record) and not batch
    attributes, data = sdk(BINARY, b'{"a": 1}')
    assert record.attributes() == attributes and record.data == data


def test_structured_mode_agrees_with_the_sdk() -> None:
    headers = {"content-type": "application/cloudevents+json"}
    (record,), _ = decode(headers, json.dumps(STRUCTURED).encode())
    assert isinstance(record, Record)
    attributes, data = sdk(headers, json.dumps(STRUCTURED).encode())
    assert record.attributes() == attributes
    assert record.json() == json.loads(data)


def test_structured_base64_data_is_bytes_as_in_the_sdk() -> None:
    document = {**STRUCTURED, "data_base64": base64.b64encode(b"\x00\x01").decode()}
    del document["data"]
    headers = {"content-type": "application/cloudevents+json"}
    (record,), _ = decode(headers, json.dumps(document).encode())
    assert isinstance(record, Record) and record.data == b"\x00\x01" == sdk(headers, json.dumps(document).encode())[1]


def test_the_sdk_invents_a_time_we_do_not() -> None:
    headers = {k: v for k, v in BINARY.items() if k != "ce-time"}
    (record,), _ = decode(headers, b"{}")
    assert isinstance(record, Record) and record.time is None
    assert "time" in sdk(headers, b"{}")[0]  # why the decoding is our own


def test_batches_decode_each_member_and_mark_the_bad_ones() -> None:
    body = json.dumps([STRUCTURED, {"specversion": "1.0", "id": "e3"}, 7]).encode()
    delivered, batch = decode({"content-type": "application/cloudevents-batch+json"}, body)
    assert batch and isinstance(delivered[0], Record)
    assert delivered[1] == Undecodable("e3", "missing CloudEvent attribute source")
    assert delivered[2] == Undecodable("#2", "event is not a JSON object")


@pytest.mark.parametrize("headers,body,status,message", [
    ({"content-type": "text/plain"}, b"x", 415, "not a CloudEvent"),
    ({}, b"x", 400, "not a CloudEvent"),
    ({"content-type": "application/cloudevents+json"}, b"{nope", 400, "not valid JSON"),
    ({"content-type": "application/cloudevents-batch+json"}, b"[" * 50_000, 400, "nested too deeply"),
    ({"content-type": "application/cloudevents-batch+json"}, b"{}", 400, "must be a JSON array"),
])
def test_requests_that_carry_no_event(headers: dict[str, str], body: bytes, status: int, message: str) -> None:
    with pytest.raises(BadDelivery, match=message) as raised:
        decode(headers, body)
    assert raised.value.status == status


def test_statuses_as_a_kafkasource_reads_them() -> None:
    assert status_of(BatchReport.of([("a", ok())]), batch=False) == 200
    assert status_of(BatchReport.of([("a", reject("bad"))]), batch=False) == 400
    assert status_of(BatchReport.of([("a", retry("busy"))]), batch=False) == 503
    assert status_of(BatchReport.of([("a", ok()), ("b", reject("bad"))]), batch=True) == 200
    assert status_of(BatchReport.of([("a", reject("bad")), ("b", retry("busy"))]), batch=True) == 503


def test_the_gate_queues_ten_times_its_limit_then_refuses() -> None:
    async def scenario() -> tuple[int, int]:
        gate = ConcurrencyGate(1)
        release = asyncio.Event()
        admitted = refused = 0

        async def one() -> None:
            nonlocal admitted, refused
            try:
                async with gate:
                    admitted += 1
                    await release.wait()
            except QueueFull:
                refused += 1

        tasks = [asyncio.create_task(one()) for _ in range(15)]
        await asyncio.sleep(0.01)
        release.set()
        await asyncio.gather(*tasks)
        return admitted, refused

    assert asyncio.run(scenario()) == (11, 4)


app: App[None] = App("sink-test", module=__name__, environ={})


@app.event("take")
def take(record: Record, invocation: Any) -> Any:
    value = record.json()
    if value.get("bad"):
        return reject("bad value")
    if value.get("busy"):
        return retry("busy")
    return None


def post(headers: dict[str, str], body: bytes, path: str = "/", method: str = "POST") -> tuple[int, Any]:
    request = HttpRequest(method, path, path, "", list(headers.items()), body)
    response = asyncio.run(call(sink_app(take), request))
    return response.status, json.loads(response.body)


def test_the_sink_answers_per_outcome() -> None:
    assert post(BINARY, b'{"x": 1}')[0] == 200
    status, body = post(BINARY, b'{"bad": true}')
    assert status == 400 and body["error"]["message"] == "bad value"
    assert post(BINARY, b'{"busy": true}')[0] == 503
    assert post(BINARY, b"not json")[0] == 400  # a RecordError is a reject


def test_the_sink_reports_a_batch_member_by_member() -> None:
    members = [{**STRUCTURED, "id": f"e{i}", "data": data} for i, data in enumerate([{}, {"bad": 1}])]
    status, body = post({"content-type": "application/cloudevents-batch+json"}, json.dumps(members).encode())
    assert status == 200 and [r["status"] for r in body["results"]] == ["ok", "reject"]


def test_the_sink_routes() -> None:
    assert post({}, b"", "/healthz", "GET") == (200, {"status": "ok"})
    assert post({}, b"", "/other")[0] == 404
    assert post({}, b"", "/", "GET")[0] == 405


def test_the_sink_refuses_oversize_bodies() -> None:
    request = HttpRequest("POST", "/", "/", "", list(BINARY.items()), b"x" * 2048)
    response = asyncio.run(call(sink_app(take, max_body_bytes=1024), request))
    assert response.status == 413 and b"larger than 1024 bytes" in response.body
