"""The processor endpoint: through functions-framework, and with a failing store."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest
from flask.testing import FlaskClient

import functions.main
from functions.adapters.memory import MemoryPublisher, MemoryResultStore
from functions.config import Settings
from functions.processor_http import create_processor_app
from functions.wiring import Services, process_config
from handlers.model import ProcessedBarrage
from handlers.ports import PutResult, PutStatus, SystemClock
from tests.golden import http_event
from tests.integration.functions.conftest import ClientFactory


@pytest.fixture
def client(ff_client: ClientFactory) -> FlaskClient:
    return ff_client("process")


def deliver(client: FlaskClient, name: str) -> tuple[int, dict[str, Any]]:
    headers, body = http_event(name)
    response = client.post("/", headers=headers, data=body)
    return response.status_code, response.get_json()


@pytest.mark.parametrize(
    "name", ["kafkasource_binary_plain.json", "kafkasource_binary_forwarded.json", "structured.json"]
)
def test_single_events_are_stored_then_duplicates(client: FlaskClient, name: str) -> None:
    status, body = deliver(client, name)
    assert (status, body["stored"]) == (200, 1)
    status, body = deliver(client, name)
    assert (status, body["duplicate"], body["stored"]) == (200, 1, 0)


def test_batch_reports_each_event(client: FlaskClient) -> None:
    status, body = deliver(client, "batch.json")
    assert status == 200
    assert [r["status"] for r in body["results"]] == ["stored", "stored", "rejected"]
    assert body["results"][2]["event_id"] == "bad-1"


@pytest.mark.parametrize(
    "name",
    [
        "broken_unsupported_type.json",
        "broken_invalid_barrage.json",
        "broken_data_not_json.json",
        "broken_missing_attribute.json",
        "broken_batch_not_array.json",
        "broken_not_cloudevent.json",
    ],
)
def test_permanent_failures_are_400_with_a_reason(client: FlaskClient, name: str) -> None:
    status, body = deliver(client, name)
    assert status == 400
    assert body["error"]["message"]


def test_health(client: FlaskClient) -> None:
    assert client.get("/healthz").status_code == 200


class ThrottledStore(MemoryResultStore):
    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        return [PutResult(r.id, PutStatus.FAILED, "throttled") for r in results]


def test_transient_store_failure_is_503() -> None:
    settings = Settings.from_environ({})
    store = ThrottledStore()
    services = Services(settings, store, MemoryPublisher(), SystemClock(), process_config(settings))
    client = create_processor_app(services).test_client()
    headers, body = http_event("structured.json")
    response = client.post("/", headers=headers, data=body)
    assert response.status_code == 503
    assert response.get_json()["failed"] == 1
    headers, body = http_event("batch.json")
    assert client.post("/", headers=headers, data=body).status_code == 503


def test_redelivery_through_every_shape_stores_once(client: FlaskClient) -> None:
    # The same barrage as a forwarded binary event, inside a batch and structured: one row.
    deliver(client, "kafkasource_binary_forwarded.json")
    deliver(client, "kafkasource_binary_plain.json")
    deliver(client, "batch.json")
    # The processor has no read API: read its store directly.
    items = functions.main.services().store.latest("room-1", 10).items
    assert [i.id for i in items] == ["01JQ0000000000000000000001"]
