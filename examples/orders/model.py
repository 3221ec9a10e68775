"""The orders domain, pure: what an order is, and what a customer's totals are."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

ORDER_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
CUSTOMER_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")
MAX_ITEMS = 100
MAX_QUANTITY = 10_000
MAX_PRICE_CENTS = 100_000_000


class OrderError(ValueError):
    """An order that can never be accepted; the message names the field."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field


@dataclass(frozen=True)
class Line:
    sku: str
    quantity: int
    price_cents: int


@dataclass(frozen=True)
class Order:
    id: str
    customer: str
    lines: tuple[Line, ...]

    @property
    def total_cents(self) -> int:
        return sum(line.quantity * line.price_cents for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "customer": self.customer, "lines": [asdict(line) for line in self.lines]}


@dataclass(frozen=True)
class Totals:
    customer: str
    orders: int
    total_cents: int


def _whole(value: Any, field: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise OrderError(field, "must be a whole number")
    if not low <= value <= high:
        raise OrderError(field, f"must be between {low} and {high}")
    return value


def parse_order(value: Any) -> Order:
    if not isinstance(value, Mapping):
        raise OrderError("order", "must be a JSON object")
    order_id, customer, lines = value.get("id"), value.get("customer"), value.get("lines")
    if not isinstance(order_id, str) or not ORDER_ID.match(order_id):
        raise OrderError("id", "must be 1-64 letters, digits, '_' or '-'")
    if not isinstance(customer, str) or not CUSTOMER_ID.match(customer):
        raise OrderError("customer", "must be 1-40 lower-case letters, digits or '-'")
    if not isinstance(lines, list) or not 1 <= len(lines) <= MAX_ITEMS:
        raise OrderError("lines", f"must be a list of 1 to {MAX_ITEMS} lines")
    parsed = []
    for index, line in enumerate(lines):
        if not isinstance(line, Mapping) or not isinstance(line.get("sku"), str) or not line["sku"].strip():
            raise OrderError(f"lines[{index}].sku", "must be a non-empty string")
        parsed.append(Line(line["sku"].strip(), _whole(line.get("quantity"), f"lines[{index}].quantity", 1,
                                                       MAX_QUANTITY),
                           _whole(line.get("price_cents"), f"lines[{index}].price_cents", 0, MAX_PRICE_CENTS)))
    return Order(order_id, customer, tuple(parsed))
