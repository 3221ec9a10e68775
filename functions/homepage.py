"""The HomePage HTTP API: one Flask app object that every binding serves.

functions-framework (Knative, local), FC 2.0 WSGI, FC 3.0 HTTP events and the custom
container all hand their requests to the app that ``create_app`` returns.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, request
from werkzeug.exceptions import HTTPException

from functions.wiring import Services
from handlers.fetch import FetchError, fetch, parse_limit
from handlers.send import BatchTooLarge, send

log = logging.getLogger("barrage.homepage")


class ApiError(Exception):
    def __init__(self, status: int, message: str, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.details = details


def json_response(payload: Any, status: int = 200) -> Response:
    return Response(json.dumps(payload, ensure_ascii=False), status=status, mimetype="application/json")


def error_response(status: int, message: str, **details: Any) -> Response:
    return json_response({"error": {"status": status, "message": message, **details}}, status)


def read_json_body(max_bytes: int) -> Any:
    """The request's JSON body, or an ``ApiError`` that says what is wrong with it."""
    mimetype = request.mimetype or ""
    if mimetype != "application/json" and not mimetype.endswith("+json"):
        raise ApiError(415, "Content-Type must be application/json")
    length = request.content_length
    if length is not None and length > max_bytes:
        raise ApiError(413, f"body is larger than {max_bytes} bytes")
    raw = request.stream.read(max_bytes + 1)
    if len(raw) > max_bytes:
        raise ApiError(413, f"body is larger than {max_bytes} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ApiError(400, "body is not UTF-8") from None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise ApiError(400, f"body is not valid JSON: {exc}") from None


def create_app(services: Services) -> Flask:
    app = Flask("barrage.homepage", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.extensions["barrage.services"] = services

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        return error_response(exc.status, exc.message, **exc.details)

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        return error_response(exc.code or 500, exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok", "bus": services.settings.bus})

    @app.post("/api/barrages")
    def post_barrages() -> Response:
        body = read_json_body(services.settings.max_body_bytes)
        single = isinstance(body, dict)
        if not single and not isinstance(body, list):
            raise ApiError(400, "body must be a barrage object or a list of them")
        if not single and not body:
            raise ApiError(400, "the list of barrages is empty")
        try:
            result = send([body] if single else body, services.publisher, services.clock)
        except BatchTooLarge as exc:
            raise ApiError(413, str(exc)) from None
        payload = {
            "accepted": [{"id": b.id, "sent_at": b.sent_at} for b in result.accepted],
            "rejected": [{"index": r.index, "field": r.field, "reason": r.reason} for r in result.rejected],
            "failed": [{"id": i, "reason": reason} for i, reason in result.failed.items()],
        }
        if result.accepted:
            return json_response(payload, 202)
        if result.failed:
            return error_response(503, "barrages could not be published; retry with the same ids", **payload)
        first = result.rejected[0]
        return error_response(400, f"{first.field}: {first.reason}", **payload)

    @app.get("/api/barrages")
    def get_barrages() -> Response:
        try:
            limit = parse_limit(request.args.get("limit"))
            page = fetch(services.store, request.args.get("room"), request.args.get("since"), limit)
        except FetchError as exc:
            raise ApiError(400, str(exc), parameter=exc.parameter) from None
        return json_response({"items": [r.to_dict() for r in page.items], "cursor": page.cursor})

    return app
