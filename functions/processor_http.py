"""The processor as an HTTP endpoint for CloudEvents (Knative KafkaSource sink, local dispatcher).

Served by functions-framework as an ``http`` target, not a ``cloud_event`` one: a
cloud_event target always answers 200, and the sink's status is what tells a KafkaSource
to retry (503) or dead-letter (400). See PLATFORM.md section 7.
"""

from __future__ import annotations

import json

from flask import Flask, Response, request

from functions.concurrency import ConcurrencyLimiter, QueueFull
from functions.processor import BadRequest, decode_http, handle, http_status, log_outcomes, summary
from functions.wiring import Services

MAX_BODY_BYTES = 32 * 1024 * 1024  # as the FC Kafka trigger's synchronous limit


def _json(payload: object, status: int) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json")


def create_processor_app(services: Services, limiter: ConcurrencyLimiter | None = None) -> Flask:
    app = Flask("barrage.processor", static_folder=None)
    gate = limiter or ConcurrencyLimiter(services.settings.container_concurrency)

    @app.get("/healthz")
    def healthz() -> Response:
        return _json({"status": "ok"}, 200)

    @app.post("/")
    def receive() -> Response:
        try:
            with gate.slot():
                return _receive()
        except QueueFull as exc:
            return _json({"error": {"status": 503, "message": str(exc)}}, 503)

    def _receive() -> Response:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _json({"error": {"status": 413, "message": f"body is larger than {MAX_BODY_BYTES} bytes"}}, 413)
        body = request.get_data(cache=False)
        try:
            events, batch = decode_http(dict(request.headers), body)
        except BadRequest as exc:
            return _json({"error": {"status": 400, "message": str(exc)}}, 400)
        outcomes = handle(
            events, services.store, services.clock, services.process_config, services.tracing,
            parent_traceparent=None if batch else request.headers.get("traceparent"),
        )
        log_outcomes(outcomes)
        status = http_status(outcomes, batch)
        payload = summary(outcomes)
        if status >= 400 and not batch:
            payload["error"] = {"status": status, "message": outcomes[0].reason}
        return _json(payload, status)

    return app
