"""The HomePage: the danmaku page and its HTTP API, as one Flask app object every binding serves.

functions-framework (Knative, local), FC 2.0 WSGI, FC 3.0 HTTP events and the custom
container all hand their requests to the app that ``create_app`` returns.

Endpoints (``GET /openapi.json`` describes them):

* ``GET /`` and ``/static/*``: the page (no build step; CSP ``script-src 'self'``).
* ``POST /api/barrages``, ``GET /api/barrages``: send, and page through results by cursor.
* ``GET /api/stream``: Server-Sent Events for functions-framework/Knative. Each stream holds
  one server thread (gunicorn's gthread worker), so streams are capped (``max_streams``,
  default half of ``THREADS``) and live at most ``stream_lifetime_s`` before the browser
  reconnects (``retry:``) from its ``Last-Event-ID`` cursor. Beyond the cap: 503, and the
  page polls ``GET /api/barrages`` instead, which is also the path on Function Compute.
* ``POST /api/load``, ``GET /api/load/<id>``: server-side load runs (``functions.loadrun``).
* ``GET /healthz``.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flask import Flask, Response, request, send_from_directory
from opentelemetry.trace import SpanKind
from werkzeug.exceptions import HTTPException

from functions.adapters.tracing import context_from
from functions.config import Settings
from functions.loadrun import (
    LoadLimits,
    LoadRefused,
    LoadRequest,
    LoadRequestError,
    LoadRun,
    LoadRuns,
    parse_load_request,
)
from functions.wiring import Services
from handlers.cursor import MAX_TOKEN_LENGTH
from handlers.fetch import MAX_LIMIT, FetchError, fetch, parse_limit
from handlers.model import ID_PATTERN, MAX_BATCH_SIZE, MAX_TEXT_LENGTH, MAX_TIMESTAMP_MS, MIN_TIMESTAMP_MS
from handlers.send import BatchTooLarge, send

log = logging.getLogger("barrage.homepage")

STATIC_DIR = Path(__file__).resolve().parent / "static"
RUN_ID_PATTERN = r"^[0-9a-f]{24}$"

# No inline script or style anywhere on the page: it sets styles through the CSSOM and
# the Web Animations API, which CSP does not restrict.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
}


@dataclass(frozen=True)
class HomePageOptions:
    """Limits of this process's HomePage (settings that only the HTTP layer needs)."""

    max_streams: int = 2
    stream_lifetime_s: float = 120.0
    stream_poll_s: float = 0.25
    heartbeat_s: float = 15.0
    retry_ms: int = 1000
    load: LoadLimits = field(default_factory=LoadLimits)
    # Origins allowed to call the API cross-origin; empty (the default) sends no CORS headers.
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> HomePageOptions:
        return cls(max_streams=settings.max_streams, cors_origins=settings.cors_origins)


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
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


# ---------------------------------------------------------------------------------------
# Server-Sent Events


class StreamSlots:
    """A counted, non-blocking cap on open streams."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._open = 0
        self._lock = threading.Lock()

    def try_acquire(self) -> bool:
        with self._lock:
            if self._open >= self.limit:
                return False
            self._open += 1
            return True

    def release(self) -> None:
        with self._lock:
            self._open = max(0, self._open - 1)

    @property
    def open(self) -> int:
        with self._lock:
            return self._open


class EventStream:
    """The response body of one stream; frees its slot on close even if never iterated."""

    def __init__(self, events: Iterator[str], release: Callable[[], None]) -> None:
        self._events = events
        self._release: Callable[[], None] | None = release

    def __iter__(self) -> EventStream:
        return self

    def __next__(self) -> bytes:
        try:
            return next(self._events).encode("utf-8")
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        close = getattr(self._events, "close", None)
        if callable(close):
            close()
        release, self._release = self._release, None
        if release is not None:
            release()


def sse_event(data: Any, event_id: str | None = None, event: str | None = None) -> str:
    lines = []
    if event_id is not None:
        lines.append(f"id: {event_id}")
    if event is not None:
        lines.append(f"event: {event}")
    # json.dumps never emits a raw newline, so the payload is one data: line.
    lines.append(f"data: {json.dumps(data, ensure_ascii=False, separators=(',', ':'))}")
    return "\n".join(lines) + "\n\n"


# ---------------------------------------------------------------------------------------
# The app


def create_app(services: Services, options: HomePageOptions | None = None) -> Flask:
    opts = options if options is not None else HomePageOptions.from_settings(services.settings)
    app = Flask("barrage.homepage", static_folder=None)
    app.config["MAX_CONTENT_LENGTH"] = services.settings.max_body_bytes
    app.extensions["barrage.services"] = services
    slots = StreamSlots(opts.max_streams)
    runs = LoadRuns(services.publisher, services.clock, opts.load)
    app.extensions["barrage.streams"] = slots
    app.extensions["barrage.load_runs"] = runs
    services.closers.append(runs.close)

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> Response:
        response = error_response(exc.status, exc.message, **exc.details)
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Response:
        response = error_response(exc.code or 500, exc.description or exc.name)
        # Keep what the exception says besides its HTML body (405's Allow, 416's Content-Range).
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.path)
        return error_response(500, "internal error")

    @app.after_request
    def _headers(response: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        origin = request.headers.get("Origin")
        if origin and origin in opts.cors_origins:
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Access-Control-Allow-Methods"] = "GET, POST"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type, Last-Event-ID"
            response.headers.add("Vary", "Origin")
        return response

    # -- the page ----------------------------------------------------------------------

    @app.get("/")
    def index() -> Response:
        response = send_from_directory(STATIC_DIR, "index.html", max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/static/<path:name>")
    def static_file(name: str) -> Response:
        # send_from_directory refuses paths that leave STATIC_DIR (404).
        response = send_from_directory(STATIC_DIR, name, max_age=0)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @app.get("/openapi.json")
    def openapi() -> Response:
        return json_response(openapi_document(services, opts))

    @app.get("/healthz")
    def healthz() -> Response:
        return json_response({"status": "ok", "bus": services.settings.bus})

    # -- barrages ----------------------------------------------------------------------

    @app.post("/api/barrages")
    def post_barrages() -> Response:
        body = read_json_body(services.settings.max_body_bytes)
        single = isinstance(body, dict)
        if not single and not isinstance(body, list):
            raise ApiError(400, "body must be a barrage object or a list of them")
        if not single and not body:
            raise ApiError(400, "the list of barrages is empty")
        tracing = services.tracing
        names = tracing.config
        # The seed's span names: PARENT_SPAN for the request, TRACE_NAME1 for the send; a
        # caller's own traceparent header continues its trace.
        with tracing.span(names.parent_span, parent=context_from(request.headers.get("traceparent")),
                          kind=SpanKind.SERVER, attributes={"http.route": "/api/barrages"}), \
                tracing.span(names.sender_span) as span:
            try:
                result = send([body] if single else body, services.publisher, services.clock)
            except BatchTooLarge as exc:
                raise ApiError(413, str(exc)) from None
            span.set_attribute("barrage.accepted", len(result.accepted))
            span.set_attribute("barrage.rejected", len(result.rejected))
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
        with services.tracing.span(services.tracing.config.result_span, kind=SpanKind.SERVER,
                                   parent=context_from(request.headers.get("traceparent"))) as span:
            try:
                limit = parse_limit(request.args.get("limit"))
                page = fetch(services.store, request.args.get("room"), request.args.get("since"), limit)
            except FetchError as exc:
                raise ApiError(400, str(exc), parameter=exc.parameter) from None
            span.set_attribute("barrage.count", len(page.items))
        return json_response({"items": [r.to_dict() for r in page.items], "cursor": page.cursor})

    @app.get("/api/stream")
    def stream() -> Response:
        room = request.args.get("room")
        # EventSource resends the last event id on reconnect: resume exactly there.
        header = request.headers.get("Last-Event-ID") or None  # an empty id is no id
        since = header if header is not None else request.args.get("since")
        try:
            if since is None:
                cursor = fetch(services.store, room, None, 1).cursor  # start from now
                first_items: list[dict[str, Any]] = []
            else:
                page = fetch(services.store, room, since, MAX_LIMIT)
                cursor, first_items = page.cursor, [r.to_dict() for r in page.items]
        except FetchError as exc:
            parameter = "Last-Event-ID" if exc.parameter == "since" and header is not None else exc.parameter
            raise ApiError(400, str(exc).replace("since:", f"{parameter}:", 1), parameter=parameter) from None
        assert isinstance(room, str)  # fetch checked it
        if not slots.try_acquire():
            raise ApiError(503, f"{slots.limit} event streams are open, the most allowed; poll GET /api/barrages "
                                "instead", headers={"Retry-After": "10"}, open_streams=slots.limit)
        body = EventStream(_events(services, opts, room, cursor, first_items), slots.release)
        return Response(body, mimetype="text/event-stream", headers={
            "Cache-Control": "no-cache, no-store",
            # Proxies (nginx, Knative's queue-proxy) must not buffer the stream.
            "X-Accel-Buffering": "no",
        })

    # -- load runs ---------------------------------------------------------------------

    @app.post("/api/load")
    def post_load() -> Response:
        body = read_json_body(services.settings.max_body_bytes)
        try:
            load_request = parse_load_request(body, opts.load)
        except LoadRequestError as exc:
            raise ApiError(400, str(exc), field=exc.field) from None
        try:
            run, created_ms = runs.start(request.remote_addr or "unknown", load_request)
        except LoadRefused as exc:
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))} if exc.retry_after_s else {}
            raise ApiError(exc.status, exc.message, headers=headers, **exc.details) from None
        response = json_response(load_view(run, load_request, created_ms), 202)
        response.headers["Location"] = f"/api/load/{run.id}"
        return response

    @app.get("/api/load/<run_id>")
    def get_load(run_id: str) -> Response:
        found = runs.get(run_id)
        if found is None:
            raise ApiError(404, "no load run with that id (finished runs are kept for a while only)")
        return json_response(load_view(*found))

    return app


def load_view(run: LoadRun, load_request: LoadRequest, created_ms: int) -> dict[str, Any]:
    return {
        "id": run.id,
        "room": load_request.room,
        "user": load_request.user,
        "message": load_request.message,
        "concurrency": load_request.concurrency,
        "duration": load_request.duration_s,
        "created_at": created_ms,
        **run.snapshot().to_dict(),
    }


def _events(services: Services, opts: HomePageOptions, room: str, cursor: str,
            first_items: list[dict[str, Any]]) -> Iterator[str]:
    """Poll the store with the cursor; push what is new, heartbeat while idle, end on time."""
    started = time.monotonic()
    yield f"retry: {opts.retry_ms}\n\n"
    yield sse_event({"items": first_items, "cursor": cursor}, event_id=cursor)
    last_write = time.monotonic()
    while True:
        now = time.monotonic()
        if now - started >= opts.stream_lifetime_s:
            # A bounded lifetime frees the thread; the browser reconnects after retry ms.
            yield ": lifetime reached; reconnect\n\n"
            return
        try:
            page = services.store.since(room, cursor, MAX_LIMIT)
        except Exception:  # the store hiccupped: end this stream, the client resumes from its cursor
            log.exception("event stream for room %s: store read failed", room)
            yield sse_event({"message": "store read failed; reconnecting"}, event="problem")
            return
        if page.items:
            cursor = page.cursor
            yield sse_event({"items": [r.to_dict() for r in page.items], "cursor": cursor}, event_id=cursor)
            last_write = now
            if len(page.items) == MAX_LIMIT:
                continue  # more waiting: read on without sleeping
        elif now - last_write >= opts.heartbeat_s:
            # A comment keeps proxies from closing an idle stream and detects gone clients.
            yield ": ping\n\n"
            last_write = now
        time.sleep(opts.stream_poll_s)


# ---------------------------------------------------------------------------------------
# OpenAPI


def _error_schema_ref() -> dict[str, Any]:
    return {"$ref": "#/components/schemas/Error"}


def _json(schema: dict[str, Any], description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": {"application/json": {"schema": schema}}}
    if headers:
        response["headers"] = headers
    return response


def _error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return _json(_error_schema_ref(), description, headers)


_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait before retrying", "schema": {"type": "string"}}}


def openapi_document(services: Services, opts: HomePageOptions) -> dict[str, Any]:
    identifier = {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}
    text = {"type": "string", "minLength": 1, "maxLength": MAX_TEXT_LENGTH, "pattern": r"\S",
            "description": "Trimmed of surrounding whitespace; must not be empty after trimming"}
    # An empty cursor means "from the beginning" (handlers.fetch).
    cursor_schema = {"type": "string", "maxLength": MAX_TOKEN_LENGTH}
    limits = opts.load
    nullable_ms = {"type": "number", "nullable": True}
    body_errors = {
        "413": _error(f"Body larger than {services.settings.max_body_bytes} bytes"),
        "415": _error("Content-Type is not application/json"),
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "barrage HomePage",
            "version": "1.0.0",
            "description": "Send barrages (bullet comments), read processed ones by cursor or as Server-Sent "
                           "Events, and run server-side load tests. Every error is JSON: "
                           '{"error": {"status", "message", ...details}}.',
        },
        "paths": {
            "/healthz": {"get": {
                "operationId": "healthz",
                "summary": "Liveness",
                "responses": {"200": _json({"$ref": "#/components/schemas/Health"}, "The process is serving")},
            }},
            "/api/barrages": {
                "post": {
                    "operationId": "sendBarrages",
                    "summary": "Send one barrage or a batch",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {"oneOf": [
                        {"$ref": "#/components/schemas/Submission"},
                        {"type": "array", "minItems": 1, "maxItems": MAX_BATCH_SIZE,
                         "items": {"$ref": "#/components/schemas/Submission"}},
                    ]}}}},
                    "responses": {
                        "202": _json({"$ref": "#/components/schemas/SendResult"},
                                     "At least one barrage was accepted; others are listed as rejected or failed"),
                        "400": _error("Nothing valid to send; the message names the first problem"),
                        **body_errors,
                        "503": _error("The bus could not confirm the barrages; resend them with the same ids"),
                    },
                },
                "get": {
                    "operationId": "listBarrages",
                    "summary": "The newest processed barrages of a room, or those after a cursor",
                    "parameters": [
                        {"name": "room", "in": "query", "required": True, "schema": identifier},
                        {"name": "since", "in": "query", "required": False, "schema": cursor_schema,
                         "description": "A cursor from an earlier answer; empty: from the start; absent: the newest"},
                        {"name": "limit", "in": "query", "required": False,
                         "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100}},
                    ],
                    "responses": {
                        "200": _json({"$ref": "#/components/schemas/Page"}, "Results, oldest first"),
                        "400": _error("A bad parameter (named in error.parameter), including a foreign cursor"),
                    },
                },
            },
            "/api/stream": {"get": {
                "operationId": "streamBarrages",
                "summary": "Processed barrages as Server-Sent Events (not on Function Compute: poll there)",
                "description": f"Each event's data is a Page; its id is the cursor, so a reconnecting EventSource "
                               f"resumes via Last-Event-ID. Comments are heartbeats. A stream ends after "
                               f"{opts.stream_lifetime_s:g} s and the client reconnects (retry: {opts.retry_ms} ms). "
                               f"At most {opts.max_streams} streams are open at once per process.",
                "parameters": [
                    {"name": "room", "in": "query", "required": True, "schema": identifier},
                    {"name": "since", "in": "query", "required": False, "schema": cursor_schema,
                     "description": "Resume after this cursor; empty: from the beginning; absent: only what arrives "
                                    "from now"},
                    {"name": "Last-Event-ID", "in": "header", "required": False, "schema": cursor_schema,
                     "description": "Sent by EventSource on reconnect; takes precedence over since"},
                ],
                "responses": {
                    "200": {"description": "An event stream; the schema describes one event",
                            "content": {"text/event-stream": {"schema": {"$ref": "#/components/schemas/Event"}}}},
                    "400": _error("A bad room or cursor"),
                    "503": _error("Too many open streams; poll GET /api/barrages", _RETRY_AFTER),
                },
            }},
            "/api/load": {"post": {
                "operationId": "startLoadRun",
                "summary": "Start a server-side load run publishing one message repeatedly",
                "description": f"concurrency <= {limits.max_concurrency}, duration <= {limits.max_duration_s:g} s, "
                               f"one running run per client address, at most {limits.starts_per_window} starts per "
                               f"{limits.window_s:g} s per client, at most {limits.max_active_runs} runs at once.",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/LoadRequest"}}}},
                "responses": {
                    "202": _json({"$ref": "#/components/schemas/LoadRun"}, "Started", {
                        "Location": {"description": "Where to follow the run", "schema": {"type": "string"}}}),
                    "400": _error("A bad field (named in error.field)"),
                    "409": _error("This client already has a run in progress (its id is in error.run)"),
                    **body_errors,
                    "429": _error("Too many starts from this client", _RETRY_AFTER),
                    "503": _error("Too many runs at once, or shutting down", _RETRY_AFTER),
                },
            }},
            "/api/load/{id}": {"get": {
                "operationId": "getLoadRun",
                "summary": "Progress and, once finished, final stats of a load run",
                "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
                "responses": {
                    "200": _json({"$ref": "#/components/schemas/LoadRun"}, "The run"),
                    "404": _error("No such run (or forgotten)"),
                },
            }},
            "/openapi.json": {"get": {
                "operationId": "openapi",
                "summary": "This document",
                "responses": {"200": {"description": "OpenAPI 3.0 document",
                                      "content": {"application/json": {"schema": {"type": "object"}}}}},
            }},
            "/": {"get": {
                "operationId": "page",
                "summary": "The danmaku page",
                "responses": {"200": {"description": "HTML", "content": {"text/html": {"schema": {"type": "string"}}}}},
            }},
        },
        "components": {"schemas": {
            "Error": {
                "type": "object", "required": ["error"],
                "properties": {"error": {
                    "type": "object", "required": ["status", "message"],
                    "properties": {
                        "status": {"type": "integer"},
                        "message": {"type": "string"},
                        "parameter": {"type": "string"},
                        "field": {"type": "string"},
                        "run": {"type": "string"},
                        "open_streams": {"type": "integer"},
                        "accepted": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}},
                        "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}},
                        "failed": {"type": "array", "items": {"$ref": "#/components/schemas/Failed"}},
                    },
                }},
            },
            "Event": {
                "type": "object",
                "description": "One server-sent event. Without an event name, data is a Page (JSON) and id its "
                               "cursor; event 'problem' carries {message} (JSON) before the stream ends.",
                "properties": {
                    "data": {"type": "string"},
                    "id": {"type": "string"},
                    "event": {"type": "string", "enum": ["message", "problem"]},
                },
            },
            "Health": {"type": "object", "required": ["status", "bus"], "properties": {
                "status": {"type": "string", "enum": ["ok"]}, "bus": {"type": "string", "enum": ["memory", "kafka"]}}},
            "Submission": {
                "type": "object", "required": ["room", "user", "text"], "additionalProperties": False,
                "properties": {
                    "id": {**identifier, "nullable": True,
                           "description": "Client-chosen id, for idempotent resends; null or absent: the server's"},
                    "room": identifier,
                    "user": identifier,
                    "text": text,
                    "colour": {"type": "string", "pattern": "^#[0-9a-fA-F]{6}$", "nullable": True,
                               "description": "Null or absent: the processor picks one"},
                    "sent_at": {"type": "integer", "minimum": MIN_TIMESTAMP_MS, "maximum": MAX_TIMESTAMP_MS,
                                "description": "Milliseconds since the epoch; stamped by the server when absent"},
                },
            },
            "Accepted": {"type": "object", "required": ["id", "sent_at"],
                         "properties": {"id": {"type": "string"}, "sent_at": {"type": "integer"}}},
            "Rejected": {"type": "object", "required": ["index", "field", "reason"], "properties": {
                "index": {"type": "integer"}, "field": {"type": "string"}, "reason": {"type": "string"}}},
            "Failed": {"type": "object", "required": ["id", "reason"],
                       "properties": {"id": {"type": "string"}, "reason": {"type": "string"}}},
            "SendResult": {"type": "object", "required": ["accepted", "rejected", "failed"], "properties": {
                "accepted": {"type": "array", "items": {"$ref": "#/components/schemas/Accepted"}},
                "rejected": {"type": "array", "items": {"$ref": "#/components/schemas/Rejected"}},
                "failed": {"type": "array", "items": {"$ref": "#/components/schemas/Failed"}},
            }},
            "Processed": {
                "type": "object",
                "required": ["id", "room", "user", "text", "lane", "colour", "sent_at", "processed_at",
                             "masked_words", "truncated", "flags"],
                "properties": {
                    "id": {"type": "string"}, "room": {"type": "string"}, "user": {"type": "string"},
                    "text": {"type": "string"}, "lane": {"type": "integer", "minimum": 0},
                    "colour": {"type": "string"}, "sent_at": {"type": "integer"},
                    "processed_at": {"type": "integer"}, "masked_words": {"type": "integer"},
                    "truncated": {"type": "boolean"}, "flags": {"type": "array", "items": {"type": "string"}},
                },
            },
            "Page": {"type": "object", "required": ["items", "cursor"], "properties": {
                "items": {"type": "array", "items": {"$ref": "#/components/schemas/Processed"}},
                "cursor": {"type": "string", "description": "Pass as since to continue after these items"},
            }},
            "LoadRequest": {
                "type": "object", "required": ["message", "concurrency", "duration", "room"],
                "additionalProperties": False,
                "properties": {
                    "message": text,
                    "concurrency": {"type": "integer", "minimum": 1, "maximum": limits.max_concurrency},
                    "duration": {"type": "number", "minimum": 0, "exclusiveMinimum": True,
                                 "maximum": limits.max_duration_s, "description": "Seconds"},
                    "room": identifier,
                    "user": {**identifier, "default": "load"},
                },
            },
            "LoadRun": {
                "type": "object",
                "required": ["id", "room", "user", "message", "concurrency", "duration", "created_at", "state",
                             "progress", "sent", "accepted", "rejected", "errors", "elapsed", "throughput",
                             "latency_ms", "last_error"],
                "properties": {
                    "id": {"type": "string", "pattern": RUN_ID_PATTERN},
                    "room": {"type": "string"}, "user": {"type": "string"}, "message": {"type": "string"},
                    "concurrency": {"type": "integer"}, "duration": {"type": "number"},
                    "created_at": {"type": "integer", "description": "Milliseconds since the epoch"},
                    "state": {"type": "string", "enum": ["running", "finished"]},
                    "progress": {"type": "number", "minimum": 0, "maximum": 1},
                    "sent": {"type": "integer"}, "accepted": {"type": "integer"},
                    "rejected": {"type": "integer"}, "errors": {"type": "integer"},
                    "elapsed": {"type": "number", "description": "Seconds"},
                    "throughput": {"type": "number", "description": "Accepted per second"},
                    "latency_ms": {"type": "object", "required": ["p50", "p95", "p99"], "properties": {
                        "p50": nullable_ms, "p95": nullable_ms, "p99": nullable_ms},
                        "description": "Publish latency of accepted barrages; null before the first"},
                    "last_error": {"type": "string", "nullable": True},
                },
            },
        }},
    }
