"""The processor as Knative runs it (functions-framework's ASGI app, functions.serve): CloudEvents over HTTP, SQLite."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from functions.adapters.memory import MemoryPublisher, MemoryResultStore
from functions.adapters.sqlite import SQLiteResultStore
from functions.app import App
from functions.asgi import HttpRequest, call
from functions.bindings.cloudevents_http import sink_app
from functions.config import Settings
from functions.processor import process_records
from functions.wiring import Services, process_config
from handlers.model import ProcessedBarrage
from handlers.ports import PutResult, PutStatus, SystemClock
from tests.golden import http_event
from tests.integration.functions.ff_support import REPO, FfServer, ff_server

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FfServer]:
    work = tmp_path_factory.mktemp("processor")
    with ff_server(REPO / "functions" / "main.py", "processor", work / "ff.log",
                   BARRAGE_DB=str(work / "barrage.db"), ROLE="processor") as running:
        yield running


@pytest.fixture
def client(server: FfServer) -> FfServer:
    return server


def deliver(client: FfServer, name: str) -> tuple[int, dict[str, Any]]:
    headers, body = http_event(name)
    status, payload = client.request("POST", "/", body, headers)
    return status, payload


@pytest.mark.parametrize(
    "name", ["kafkasource_binary_plain.json", "kafkasource_binary_forwarded.json", "structured.json"]
)
def test_single_events_are_stored_then_duplicates(client: FfServer, name: str) -> None:
    deliver(client, name)  # the module's server is shared: the first delivery may find it already stored
    status, body = deliver(client, name)
    assert (status, body["duplicate"], body["ok"]) == (200, 1, 0)


def test_batch_reports_each_event(client: FfServer) -> None:
    status, body = deliver(client, "batch.json")
    assert status == 200
    assert [r["status"] for r in body["results"]][2] == "reject"
    assert body["results"][2]["id"] == "bad-1"


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
def test_permanent_failures_are_400_with_a_reason(client: FfServer, name: str) -> None:
    status, body = deliver(client, name)
    assert status in (400, 415)  # neither is retried by a KafkaSource: straight to the dead letter
    assert body["error"]["message"]


def test_health_and_routes(client: FfServer) -> None:
    assert client.request("GET", "/healthz") == (200, {"status": "ok"})
    assert client.request("GET", "/")[0] == 405
    assert client.request("POST", "/elsewhere", b"{}")[0] == 404


def test_deep_json_and_garbage_are_400_never_5xx(client: FfServer) -> None:
    for body in (b"[" * 50_000, b"\xff\xfe", b"{"):
        status, payload = client.request("POST", "/", body, {"Content-Type": "application/cloudevents-batch+json"})
        assert status == 400, payload


class ThrottledStore(MemoryResultStore):
    def put_many(self, results: Sequence[ProcessedBarrage]) -> list[PutResult]:
        return [PutResult(r.id, PutStatus.FAILED, "throttled") for r in results]


def post(app: Any, name: str) -> tuple[int, dict[str, Any]]:
    headers, body = http_event(name)
    response = asyncio.run(call(app, HttpRequest("POST", "/", "/", "", list(headers.items()), body)))
    return response.status, json.loads(response.body)


def test_transient_store_failure_is_503() -> None:
    settings = Settings.from_environ({})
    services = Services(settings, ThrottledStore(), MemoryPublisher(), SystemClock(), process_config(settings))
    app: App[Services] = App("throttled", module=__name__, dependencies=lambda _e, _k: services, environ={})
    sink = sink_app(app.event("processor", batch=True)(process_records))
    status, body = post(sink, "structured.json")
    assert status == 503 and body["retry"] == 1
    assert post(sink, "batch.json")[0] == 503


def test_redelivery_through_every_shape_stores_once(client: FfServer, tmp_path_factory: pytest.TempPathFactory) -> None:
    # The same barrage as a forwarded binary event, inside a batch and structured: one row.
    deliver(client, "kafkasource_binary_forwarded.json")
    deliver(client, "kafkasource_binary_plain.json")
    deliver(client, "batch.json")
    # The processor has no read API: read its store directly.
    db = next(Path(tmp_path_factory.getbasetemp()).glob("processor*/barrage.db"))
    items = SQLiteResultStore(db).latest("room-1", 10).items
    assert [i.id for i in items] == ["01JQ0000000000000000000001"]
