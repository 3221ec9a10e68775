"""The orders example with golden events: its model, tally through the FC and Knative shapes, intake."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from examples.orders import app as orders
from examples.orders.model import OrderError, parse_order
from functions.app import Record
from functions.asgi import HttpRequest, call
from functions.bindings.cloudevents_http import sink_app
from functions.fc import context_from_headers

EVENTS = Path(__file__).resolve().parents[2] / "events" / "orders"
CONTEXT = context_from_headers({"x-fc-request-id": "req-o"})


@pytest.fixture(autouse=True)
def configured(tmp_path: Path) -> Iterator[None]:
    orders.app.configure({"ORDERS_DB": str(tmp_path / "totals.db")})
    yield
    orders.app.reset()


def golden(name: str) -> bytes:
    return (EVENTS / name).read_bytes()


def totals(customer: str) -> tuple[int, int]:
    found = orders.app.instance().deps.totals.totals(customer)
    return found.orders, found.total_cents


@pytest.mark.parametrize("order,field", [
    ({"id": "x", "customer": "c", "lines": []}, "lines"),
    ({"id": "", "customer": "c", "lines": [{"sku": "a", "quantity": 1, "price_cents": 1}]}, "id"),
    ({"id": "x", "customer": "C", "lines": [{"sku": "a", "quantity": 1, "price_cents": 1}]}, "customer"),
    ({"id": "x", "customer": "c", "lines": [{"sku": "a", "quantity": True, "price_cents": 1}]}, "lines[0].quantity"),
    ({"id": "x", "customer": "c", "lines": [{"sku": " ", "quantity": 1, "price_cents": 1}]}, "lines[0].sku"),
    ([], "order"),
])
def test_bad_orders_name_their_field(order: Any, field: str) -> None:
    with pytest.raises(OrderError) as raised:
        parse_order(order)
    assert raised.value.field == field


def test_the_fc_kafka_trigger_batch_is_totalled_once() -> None:
    report = orders.tally(golden("eventbridge_orders.json"), CONTEXT)
    assert [r["status"] for r in report["results"]] == ["ok", "ok", "reject", "reject"]
    assert report["results"][2]["reason"].startswith("customer:")
    # the last one is the first order as a plain record (no CloudEvent headers): not an order event
    assert "not an order event" in report["results"][3]["reason"]
    assert totals("acme") == (2, 800)
    again = orders.tally(golden("eventbridge_orders.json"), CONTEXT)
    assert [r["status"] for r in again["results"]][:2] == ["duplicate", "duplicate"]
    assert totals("acme") == (2, 800)


def post(app: Any, headers: dict[str, str], body: bytes, path: str = "/") -> tuple[int, Any]:
    response = asyncio.run(call(app, HttpRequest("POST", path, path, "", list(headers.items()), body)))
    return response.status, json.loads(response.body)


def test_tally_as_a_knative_sink() -> None:
    delivery = json.loads(golden("kafkasource_order.json"))
    sink = sink_app(orders.tally)
    status, body = post(sink, delivery["headers"], delivery["body"].encode())
    assert status == 200 and body["results"][0]["customer"] == "acme"
    assert post(sink, delivery["headers"], b'{"id": "ord-9"}')[0] == 400
    assert totals("acme") == (1, 750)


class Published:
    def __init__(self) -> None:
        self.records: list[Record] = []

    def publish(self, records: Sequence[Record], topic: str | None = None) -> None:
        self.records.extend(records)

    def close(self) -> None:
        pass


def test_intake_on_an_fc3_http_trigger_publishes_the_order_as_a_cloudevent() -> None:
    published = Published()
    orders.app.instance().deps._publisher = published
    answer = orders.intake(golden("fc_http_place_order.json"), CONTEXT)
    assert answer["statusCode"] == 202 and json.loads(answer["body"]) == {"accepted": "ord-1001", "total_cents": 750}
    (record,) = published.records
    assert (record.id, record.type, record.extensions["partitionkey"]) == ("ord-1001", orders.ORDER_PLACED, "acme")


def test_intake_refuses_bad_input_with_4xx() -> None:
    orders.app.instance().deps._publisher = Published()
    app = orders.intake.asgi()
    json_type = {"content-type": "application/json"}
    assert post(app, json_type, b"[" * 50_000, "/orders")[0] == 400
    assert post(app, json_type, b'{"id": "x"}', "/orders")[0] == 400
    assert post(app, {"content-type": "text/plain"}, b"{}", "/orders")[0] == 415
    assert post(app, json_type, b" " * 70_000, "/orders")[0] == 413
