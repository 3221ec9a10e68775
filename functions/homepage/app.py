"""The HomePage's routes, as one Starlette (ASGI) app that every binding serves.

Nothing here blocks the event loop: publishing is awaited (``AsyncPublisher``), store reads and
load-run bookkeeping run on a bounded pool (``BlockingCalls``), event streams come from the
process's one ``StreamHub``.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import Scope

from functions.adapters.tracing import context_from
from functions.config import DEFAULT_MAX_STREAMS, DEFAULT_STREAM_TICK_MS, Settings
from functions.homepage.blocking import BlockingCalls
from functions.homepage.body import read_json_body
from functions.homepage.http import (
    ApiError,
    ErrorBoundary,
    ResponseHeaders,
    api_error_handler,
    error_response,
    http_error_handler,
    json_response,
)
from functions.homepage.openapi import openapi_document
from functions.homepage.publishing import async_publisher
from functions.homepage.sse import (
    STREAM_HEADERS,
    EventStreamResponse,
    StoreUnavailable,
    StreamHub,
    StreamPage,
    StreamsFull,
    StreamTiming,
)
from functions.homepage.static import StaticFiles, file_response
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
from handlers.fetch import MAX_LIMIT, FetchError, check_room, fetch, parse_limit
from handlers.send import BatchTooLarge, send_async

log = logging.getLogger("barrage.homepage")

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

# The page reads this to choose its transport before trying one (CSP forbids inline scripts,
# so the server says it in the markup it serves).
STREAM_META = b'<meta name="barrage-stream" content="on">'
NO_STREAM_META = b'<meta name="barrage-stream" content="off">'

# A catch-up longer than this many pages ends the stream after them; the browser reconnects
# from the last one, so a viewer coming back after a long time costs bounded work per request.
MAX_CATCH_UP_PAGES = 4


@dataclass(frozen=True)
class HomePageOptions:
    """Limits of this process's HomePage (settings that only the HTTP layer needs)."""

    # Open event streams at once; 0: this runtime does not stream and the page polls.
    max_streams: int = DEFAULT_MAX_STREAMS
    stream_lifetime_s: float = 120.0
    # The hub reads each room with viewers once per tick.
    stream_poll_s: float = DEFAULT_STREAM_TICK_MS / 1000
    heartbeat_s: float = 15.0
    retry_ms: int = 1000
    # Events a viewer may have pending before it is dropped as too slow (it then reconnects).
    viewer_queue: int = 64
    # A stream write blocked this long (the viewer stopped reading) ends the stream and its connection.
    stream_send_timeout_s: float = 30.0
    # Threads for blocking store and bus calls (SQLite, Tablestore, the in-process bus).
    blocking_threads: int = 16
    load: LoadLimits = field(default_factory=LoadLimits)
    # Origins allowed to call the API cross-origin; empty (the default) sends no CORS headers.
    cors_origins: tuple[str, ...] = ()

    @classmethod
    def from_settings(cls, settings: Settings) -> HomePageOptions:
        return cls(max_streams=settings.max_streams, cors_origins=settings.cors_origins,
                   stream_poll_s=settings.stream_tick_ms / 1000)


def create_app(services: Services, options: HomePageOptions | None = None) -> Starlette:
    """The HomePage for ``services``; what it starts is closed with ``services.close()``."""
    opts = options if options is not None else HomePageOptions.from_settings(services.settings)
    max_body = services.settings.max_body_bytes
    store = services.store
    blocking = BlockingCalls(opts.blocking_threads)
    publisher, close_publisher = async_publisher(services.publisher, blocking)
    runs = LoadRuns(services.publisher, services.clock, opts.load)
    hub = StreamHub(
        lambda room, cursor, limit: blocking.run(store.since, room, cursor, limit),
        lambda room, limit: blocking.run(store.latest, room, limit),
        max_streams=opts.max_streams, tick_s=opts.stream_poll_s, queue_size=opts.viewer_queue,
    )
    timing = StreamTiming(opts.stream_lifetime_s, opts.heartbeat_s, opts.retry_ms, opts.stream_send_timeout_s)
    rewrite = {"index.html": _without_streams} if opts.max_streams == 0 else {}
    files = StaticFiles(STATIC_DIR, rewrite)
    if files.get("index.html") is None:
        raise RuntimeError(f"{STATIC_DIR / 'index.html'} is missing")
    # Closed in reverse: load runs and the poller stop before the producer they use is closed.
    services.closers.extend([blocking.close, close_publisher, runs.close])

    # -- the page ----------------------------------------------------------------------

    async def index(request: Request) -> Response:
        found = files.get("index.html")
        if found is None:
            raise ApiError(404, "the page is missing")
        return file_response(request, found)

    async def static_file(request: Request) -> Response:
        found = files.get(request.path_params["name"])
        if found is None:
            raise ApiError(404, "no such file")
        return file_response(request, found)

    async def openapi(_request: Request) -> Response:
        return json_response(openapi_document(max_body, opts))

    async def healthz(_request: Request) -> Response:
        return json_response({"status": "ok", "bus": services.settings.bus})

    # -- barrages ----------------------------------------------------------------------

    async def post_barrages(request: Request) -> Response:
        body = await read_json_body(request, max_body)
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
                result = await send_async([body] if single else body, publisher, services.clock)
            except BatchTooLarge as exc:
                raise ApiError(413, str(exc)) from None
            span.set_attribute("barrage.accepted", len(result.accepted))
            span.set_attribute("barrage.rejected", len(result.rejected))
        payload: dict[str, Any] = {
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

    async def get_barrages(request: Request) -> Response:
        query = request.query_params
        with services.tracing.span(services.tracing.config.result_span, kind=SpanKind.SERVER,
                                   parent=context_from(request.headers.get("traceparent"))) as span:
            try:
                limit = parse_limit(query.get("limit"))
                page = await blocking.run(fetch, store, query.get("room"), query.get("since"), limit)
            except FetchError as exc:
                raise ApiError(400, str(exc), parameter=exc.parameter) from None
            span.set_attribute("barrage.count", len(page.items))
        return json_response({"items": [r.to_dict() for r in page.items], "cursor": page.cursor})

    async def barrages(request: Request) -> Response:
        return await (post_barrages(request) if request.method == "POST" else get_barrages(request))

    async def stream(request: Request) -> Response:
        if opts.max_streams == 0:
            raise ApiError(503, "this deployment does not stream; poll GET /api/barrages instead",
                           headers={"Retry-After": "3600"}, open_streams=0)
        room = request.query_params.get("room")
        # EventSource resends the last event id on reconnect: resume exactly there.
        header = request.headers.get("last-event-id") or None  # an empty id is no id
        since = header if header is not None else request.query_params.get("since")
        try:
            checked_room = check_room(room)
        except FetchError as exc:
            raise ApiError(400, str(exc), parameter=exc.parameter) from None
        try:
            subscription = await hub.subscribe(checked_room)
        except StreamsFull as exc:
            raise ApiError(503, f"{exc.limit} event streams are open, the most allowed; poll GET /api/barrages "
                                "instead", headers={"Retry-After": "10"}, open_streams=exc.limit) from None
        except StoreUnavailable:
            raise ApiError(503, "the store is unavailable; retry shortly or poll GET /api/barrages",
                           headers={"Retry-After": "5"}) from None
        try:
            opening, seen, complete = await _catch_up(checked_room, since)
        except FetchError as exc:
            subscription.close()
            parameter = "Last-Event-ID" if exc.parameter == "since" and header is not None else exc.parameter
            raise ApiError(400, str(exc).replace("since:", f"{parameter}:", 1), parameter=parameter) from None
        except Exception:
            subscription.close()
            log.exception("event stream for room %s: catch-up read failed", checked_room)
            raise ApiError(503, "the store is unavailable; retry shortly or poll GET /api/barrages",
                           headers={"Retry-After": "5"}) from None
        if request.method == "HEAD":
            subscription.close()
            return Response(headers=STREAM_HEADERS, media_type="text/event-stream")
        return EventStreamResponse(subscription, opening, seen, complete, timing)

    async def _catch_up(room: str, since: str | None) -> tuple[list[StreamPage], set[str], bool]:
        """The pages after ``since`` up to the end of the store (bounded), the ids in them, and
        whether the end was reached. Without ``since`` the viewer starts where the room stands."""
        if since is None:
            return [StreamPage.of([], hub.cursor(room))], set(), True
        pages: list[StreamPage] = []
        seen: set[str] = set()
        cursor: str | None = since
        for _ in range(MAX_CATCH_UP_PAGES):
            page = await blocking.run(fetch, store, room, cursor, MAX_LIMIT)
            pages.append(StreamPage.from_page(page))
            seen.update(item.id for item in page.items)
            if len(page.items) < MAX_LIMIT:
                return pages, seen, True
            cursor = page.cursor
        return pages, seen, False

    # -- load runs ---------------------------------------------------------------------

    async def post_load(request: Request) -> Response:
        body = await read_json_body(request, max_body)
        try:
            load_request = parse_load_request(body, opts.load)
        except LoadRequestError as exc:
            raise ApiError(400, str(exc), field=exc.field) from None
        client = request.client.host if request.client else "unknown"
        try:
            # Starting a run starts its worker threads: off the loop.
            run, created_ms = await blocking.run(runs.start, client, load_request)
        except LoadRefused as exc:
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))} if exc.retry_after_s else {}
            raise ApiError(exc.status, exc.message, headers=headers, **exc.details) from None
        view = await blocking.run(load_view, run, load_request, created_ms)
        return json_response(view, 202, headers={"Location": f"/api/load/{run.id}"})

    async def get_load(request: Request) -> Response:
        found = runs.get(request.path_params["run_id"])
        if found is None:
            raise ApiError(404, "no load run with that id (finished runs are kept for a while only)")
        # A snapshot sorts up to 100,000 latency samples: off the loop.
        return json_response(await blocking.run(load_view, *found))

    # Matched in order: the busiest first.
    routes = [
        Route("/api/barrages", barrages, methods=["GET", "POST"]),
        Route("/api/stream", stream, methods=["GET"]),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/", index, methods=["GET"]),
        Route("/static/{name:path}", static_file, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/load", post_load, methods=["POST"]),
        Route("/api/load/{run_id}", get_load, methods=["GET"]),
    ]

    def allowed_methods(scope: Scope) -> set[str] | None:
        methods: set[str] = set()
        for route in routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                methods.update(route.methods or ())
        return methods or None

    app = Starlette(
        routes=routes,
        middleware=[
            Middleware(ResponseHeaders, cors_origins=opts.cors_origins, allowed_methods=allowed_methods),
            Middleware(ErrorBoundary),
        ],
        exception_handlers={ApiError: api_error_handler, HTTPException: http_error_handler},
    )
    # As before: "/healthz/" is not "/healthz" (no redirects to guess what was meant).
    app.router.redirect_slashes = False
    app.state.services = services
    app.state.hub = hub
    app.state.load_runs = runs
    app.state.blocking = blocking
    app.state.publisher = publisher
    return app


def _without_streams(html: bytes) -> bytes:
    if STREAM_META not in html:
        raise RuntimeError(f"index.html lacks {STREAM_META.decode()}: the page could not learn it must poll")
    return html.replace(STREAM_META, NO_STREAM_META)


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
