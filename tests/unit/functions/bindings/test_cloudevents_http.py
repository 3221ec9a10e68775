"""CloudEvents over HTTP: decoding (checked against the cloudevents SDK), statuses, the concurrency gate."""

from __future__ import annotations

import asyncio
import base64
import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from cloudevents.http import from_http

from functions.app import App, Record, Reject, reject, retry
from functions.asgi import HttpRequest, call
from functions.bindings.cloudevents_http import (
    BadDelivery,
    Combiner,
    ConcurrencyGate,
    QueueFull,
    decode,
    sink_app,
    status_of,
)
from functions.records import BatchReport, Undecodable, ok, record_from_attributes

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


# -- per-event requests of a batch function, run together -------------------------------------

combined_app: App[None] = App("sink-combined-test", module=__name__, environ={})
calls: list[list[tuple[str, str | None]]] = []


@combined_app.event("tally", batch=True)
def tally(records: Any, invocation: Any) -> Any:
    """Records each call's (id, delivery traceparent); a ``poison`` record fails the whole call."""
    calls.append([(r.id, invocation.delivery_headers(i).get("traceparent")) for i, r in enumerate(records)])
    if any(r.json().get("poison") for r in records):
        raise Reject("poison in the batch")
    return [ok() for _ in records]


def binary(ident: str, data: dict[str, Any], traceparent: str | None = None) -> HttpRequest:
    headers = {**BINARY, "ce-id": ident}
    if traceparent:
        headers["traceparent"] = traceparent
    return HttpRequest("POST", "/", "/", "", list(headers.items()), json.dumps(data).encode())


def run_concurrently(requests: list[HttpRequest], concurrency: int = 0) -> list[Any]:
    async def scenario() -> list[Any]:
        sink = sink_app(tally, concurrency=concurrency)
        return list(await asyncio.gather(*(call(sink, request) for request in requests)))

    _ = combined_app.instance().deps  # built: no request waits for the first build
    calls.clear()
    return asyncio.run(scenario())


def test_waiting_single_event_requests_share_one_call() -> None:
    parents = [f"00-{i:032x}-{i:016x}-01" for i in range(1, 9)]
    responses = run_concurrently([binary(f"e{i}", {"n": i}, parents[i]) for i in range(8)])
    assert [r.status for r in responses] == [200] * 8
    assert [json.loads(r.body)["results"][0]["id"] for r in responses] == [f"e{i}" for i in range(8)]
    # The first runs at once and alone; the seven that arrived meanwhile go together, each with
    # the traceparent of its own request.
    assert [len(c) for c in calls] == [1, 7]
    assert [pair for c in calls for pair in c] == [(f"e{i}", parents[i]) for i in range(8)]


def test_a_failure_of_a_combined_call_stays_with_its_record() -> None:
    requests = [binary(f"e{i}", {"poison": i == 3}) for i in range(6)]
    responses = run_concurrently(requests)
    statuses = [r.status for r in responses]
    assert statuses == [200, 200, 200, 400, 200, 200]
    assert json.loads(responses[3].body)["error"]["message"] == "poison in the batch"
    # The combined call failed, so each of its deliveries ran again on its own.
    assert [len(c) for c in calls] == [1, 5, 1, 1, 1, 1, 1]


def test_the_gate_still_bounds_what_is_combined() -> None:
    responses = run_concurrently([binary(f"e{i}", {}) for i in range(6)], concurrency=2)
    assert [r.status for r in responses] == [200] * 6
    assert max(len(c) for c in calls) <= 2


def test_combined_calls_are_capped() -> None:
    async def scenario() -> list[int]:
        executor = ThreadPoolExecutor(max_workers=1)
        combiner = Combiner(tally, executor, max_records=3)
        invocation = tally.invocation("test")
        records = [record_from_attributes({"specversion": "1.0", "id": f"e{i}", "source": "/t", "type": "t"}, b"{}")
                   for i in range(8)]
        outcomes = await asyncio.gather(*(combiner.run(r, invocation) for r in records))
        executor.shutdown()
        return [1 if o.kind.value == "ok" else 0 for o in outcomes]

    calls.clear()
    assert asyncio.run(scenario()) == [1] * 8
    assert [len(c) for c in calls] == [1, 3, 3, 1]


def test_no_waiter_hangs_once_the_pool_is_shut_down() -> None:
    async def scenario() -> list[str]:
        executor = ThreadPoolExecutor(max_workers=1)
        combiner = Combiner(tally, executor)
        executor.shutdown()
        record = record_from_attributes({"specversion": "1.0", "id": "e1", "source": "/t", "type": "t"}, b"{}")
        results = await asyncio.gather(combiner.run(record, tally.invocation("test")), return_exceptions=True)
        return [type(r).__name__ for r in results]

    assert asyncio.run(asyncio.wait_for(scenario(), 5)) == ["RuntimeError"]
