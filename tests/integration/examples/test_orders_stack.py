"""The orders example end to end: intake (functions-framework --asgi) -> the real broker -> the dispatcher
-> tally (functions-framework --asgi) -> totals read back through intake."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from functions.kafka import KafkaSettings
from functions.targets import SOURCE_FILE
from local.broker import LocalBroker
from local.kafkasource.dispatcher import DispatchOptions
from local.kafkasource.manifest import load_manifest
from local.kafkasource.run import run_dispatchers
from tests.integration.functions.ff_support import ff_server
from tests.integration.local.dispatch_support import write_manifest
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
APP = "examples.orders.app"


def order(n: int, customer: str) -> bytes:
    return json.dumps({"id": f"ord-{n}", "customer": customer,
                       "lines": [{"sku": "bolt", "quantity": n % 5 + 1, "price_cents": 100}]}).encode()


def test_orders_are_totalled_once_each(kafka_broker: LocalBroker, tmp_path: Path) -> None:
    topic = kafka_broker.new_topic(partitions=3, prefix="orders")
    db = str(tmp_path / "totals.db")
    common = {"FUNCTIONS_APP": APP, "ORDERS_DB": db}
    with ff_server(Path(SOURCE_FILE), "intake", tmp_path / "intake.log", KAFKA_SERVER=kafka_broker.bootstrap,
                   KAFKA_TOPIC=topic, **common) as intake, \
            ff_server(Path(SOURCE_FILE), "tally", tmp_path / "tally.log", **common) as tally:
        sent = {"acme": 0, "zeta": 0}
        for n in range(60):
            customer = "acme" if n % 3 else "zeta"
            status, body = intake.request("POST", "/orders", order(n, customer), {"Content-Type": "application/json"})
            assert status == 202, body
            sent[customer] += (n % 5 + 1) * 100
        # a redelivered order (the same id) changes nothing
        assert intake.request("POST", "/orders", order(1, "acme"), {"Content-Type": "application/json"})[0] == 202
        assert intake.request("POST", "/orders", b"{}", {"Content-Type": "application/json"})[0] == 400

        manifest = write_manifest(tmp_path / "source.yaml", topic, f"g-{topic}", "ordered")
        spec = load_manifest(manifest).with_bootstrap((kafka_broker.bootstrap,))
        until = threading.Event()
        thread = threading.Thread(target=run_dispatchers, daemon=True, args=(
            spec, DispatchOptions(sink_url=tally.url), KafkaSettings((kafka_broker.bootstrap,), topic), until))
        thread.start()
        try:
            def totals(customer: str) -> dict[str, int]:
                return intake.request("GET", f"/customers/{customer}")[1]  # type: ignore[no-any-return]

            wait_for(lambda: totals("acme")["orders"] + totals("zeta")["orders"] == 60, 60, "60 orders totalled")
        finally:
            until.set()
            thread.join(30)
        assert totals("acme") == {"customer": "acme", "orders": 40, "total_cents": sent["acme"]}
        assert totals("zeta") == {"customer": "zeta", "orders": 20, "total_cents": sent["zeta"]}
