"""The orders app: ``intake`` (HTTP), ``tally`` (events from Kafka topic ``orders``), one declaration.

Configuration (the process environment, or any mapping given to ``app.configure``):
``KAFKA_SERVER`` (where intake publishes; required for intake), ``KAFKA_TOPIC`` (default
``orders``), ``ORDERS_DB`` (the totals file, default ``.orders/totals.db``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from examples.orders.model import OrderError, parse_order
from examples.orders.store import SQLiteTotals, TotalsStore
from functions.app import (
    App,
    CredentialsSource,
    Invocation,
    Outcome,
    Record,
    RecordPublisher,
    duplicate,
    ok,
    reject,
    settings_from_environ,
)

TOPIC = "orders"
ORDER_PLACED = "com.example.order.placed"


@dataclass
class Clients:
    environ: Mapping[str, str]
    totals: TotalsStore
    _publisher: Any = field(default=None, repr=False)

    def publisher(self) -> Any:
        """The Kafka publisher, made on first use: only intake publishes."""
        if self._publisher is None:
            settings = settings_from_environ(self.environ, TOPIC)
            if settings is None:
                raise RuntimeError("KAFKA_SERVER is not set: intake has nowhere to publish orders")
            self._publisher = RecordPublisher(settings)
        return self._publisher

    def close(self) -> None:
        if self._publisher is not None:
            self._publisher.close()
        self.totals.close()


def connect(environ: Mapping[str, str], _credentials: CredentialsSource) -> Clients:
    return Clients(environ, SQLiteTotals(Path(environ.get("ORDERS_DB") or ".orders/totals.db")))


app: App[Clients] = App("orders", module=__name__, dependencies=connect)


@app.event("tally")
def tally(record: Record, invocation: Invocation[Clients]) -> Outcome:
    """One order added to its customer's totals, once however often it is delivered."""
    if record.type != ORDER_PLACED:
        return reject(f"not an order event: {record.type}")
    try:
        order = parse_order(record.json())
    except OrderError as exc:
        return reject(str(exc))
    applied = invocation.deps.totals.apply(order)
    return ok(customer=order.customer) if applied else duplicate(customer=order.customer)


def make_intake(clients: Clients) -> Any:
    from examples.orders.intake import intake_app

    return intake_app(clients)


intake = app.http("intake", make_intake)
initializer = app.initializer


def order_record(order_json: dict[str, Any]) -> Record:
    return Record(id=str(order_json["id"]), source="/orders/intake", type=ORDER_PLACED, data=order_json,
                  datacontenttype="application/json", extensions={"partitionkey": str(order_json["customer"])})
