"""The intake's HTTP API (Starlette): ``POST /orders``, ``GET /customers/{id}``, ``GET /healthz``."""

from __future__ import annotations

import json
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from examples.orders.app import Clients, order_record
from examples.orders.model import CUSTOMER_ID, OrderError, parse_order
from functions.app import PublishFailed

MAX_BODY = 64 * 1024


def error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"status": status, "message": message}}, status_code=status)


def intake_app(clients: Clients) -> Starlette:
    async def place(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return error(415, "Content-Type must be application/json")
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_BODY:
                return error(413, f"body is larger than {MAX_BODY} bytes")
        try:
            order = parse_order(json.loads(body))
        except (ValueError, RecursionError) as exc:
            return error(400, str(exc) if isinstance(exc, OrderError) else "body is not a JSON order")
        try:
            await run_in_threadpool(clients.publisher().publish, [order_record(order.to_json())])
        except PublishFailed as exc:
            return error(503, f"order not accepted, try again: {exc}")
        return JSONResponse({"accepted": order.id, "total_cents": order.total_cents}, status_code=202)

    async def totals(request: Request) -> JSONResponse:
        customer = request.path_params["customer"]
        if not CUSTOMER_ID.match(customer):
            return error(400, "customer: must be 1-40 lower-case letters, digits or '-'")
        found: Any = await run_in_threadpool(clients.totals.totals, customer)
        return JSONResponse({"customer": found.customer, "orders": found.orders, "total_cents": found.total_cents})

    async def healthz(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    return Starlette(routes=[Route("/orders", place, methods=["POST"]),
                             Route("/customers/{customer}", totals, methods=["GET"]),
                             Route("/healthz", healthz, methods=["GET"])])
