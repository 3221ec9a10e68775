"""The processor as an HTTP endpoint for CloudEvents (Knative KafkaSource sink, local dispatcher).

Served by functions-framework as an ``http`` target, not a ``cloud_event`` one: a
cloud_event target always answers 200, and the sink's status is what tells a KafkaSource
to retry (503) or dead-letter (400). See PLATFORM.md section 7.
"""

from __future__ import annotations

import json

from flask import Flask, Request, Response, request

from functions.concurrency import ConcurrencyLimiter, QueueFull
from functions.processor import BadRequest, decode_http, handle, http_status, log_outcomes, summary
from functions.wiring import Services

MAX_BODY_BYTES = 32 * 1024 * 1024  # as the FC Kafka trigger's synchronous limit


def _json(payload: object, status: int) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json")


def _error(status: int, message: str) -> Response:
    return _json({"error": {"status": status, "message": message}}, status)


def receive(services: Services, gate: ConcurrencyLimiter, incoming: Request) -> Response:
    """Answer one delivery: the whole processor endpoint, for any Flask request object.

    The functions-framework target calls this on the request it already parsed, so a
    delivery costs one Flask dispatch, not two (per-event delivery is request-bound).
    """
    if incoming.path == "/healthz" and incoming.method in ("GET", "HEAD"):
        return _json({"status": "ok"}, 200)
    if incoming.path != "/":
        return _error(404, f"no route {incoming.path}; deliver CloudEvents to /")
    if incoming.method != "POST":
        response = _error(405, "deliver CloudEvents with POST")
        response.headers["Allow"] = "POST"
        return response
    try:
        with gate.slot():
            return _receive(services, incoming)
    except QueueFull as exc:
        return _error(503, str(exc))


def _receive(services: Services, incoming: Request) -> Response:
    if (incoming.content_length or 0) > MAX_BODY_BYTES:
        return _error(413, f"body is larger than {MAX_BODY_BYTES} bytes")
    body = incoming.get_data(cache=False)
    try:
        events, batch = decode_http(dict(incoming.headers), body)
    except BadRequest as exc:
        return _error(400, str(exc))
    outcomes = handle(
        events, services.store, services.clock, services.process_config, services.tracing,
        parent_traceparent=None if batch else incoming.headers.get("traceparent"),
    )
    log_outcomes(outcomes)
    status = http_status(outcomes, batch)
    payload = summary(outcomes)
    if status >= 400 and not batch:
        payload["error"] = {"status": status, "message": outcomes[0].reason}
    return _json(payload, status)


def create_processor_app(services: Services, limiter: ConcurrencyLimiter | None = None) -> Flask:
    """The endpoint as a WSGI app of its own (custom container, tests, in-process servers)."""
    app = Flask("barrage.processor", static_folder=None)
    gate = limiter or ConcurrencyLimiter(services.settings.container_concurrency)

    @app.route("/", defaults={"path": ""}, methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])
    @app.route("/<path:path>", methods=["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH"])
    def endpoint(path: str) -> Response:
        return receive(services, gate, request)

    return app
