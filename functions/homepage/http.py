"""HTTP plumbing of the HomePage: JSON errors, the response headers every answer carries, CORS.

Every error, whatever raised it (a route, routing itself, an unexpected exception), is JSON:
``{"error": {"status", "message", ...details}}``. The two middlewares are plain ASGI (not
``BaseHTTPMiddleware``), so streamed answers pass through them unbuffered.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("barrage.homepage")

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
_SECURITY_RAW = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in SECURITY_HEADERS.items()]
CORS_METHODS = "GET, POST"
CORS_HEADERS = "Content-Type, Last-Event-ID"

_encode = json.JSONEncoder(ensure_ascii=False).encode


class ApiError(Exception):
    """An answer other than success: its status, message, extra headers and details."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None, **details: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.details = details


def json_response(payload: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> Response:
    return Response(_encode(payload).encode("utf-8"), status_code=status, headers=dict(headers or {}),
                    media_type="application/json")


def error_response(status: int, message: str, *, headers: Mapping[str, str] | None = None,
                   **details: Any) -> Response:
    return json_response({"error": {"status": status, "message": message, **details}}, status, headers)


async def api_error_handler(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc.status, exc.message, headers=exc.headers, **exc.details)


async def http_error_handler(_request: Request, exc: Exception) -> Response:
    """Routing's own errors (404, 405 with its Allow header) as JSON."""
    assert isinstance(exc, HTTPException)
    headers = {k: v for k, v in (exc.headers or {}).items() if k.lower() != "content-type"}
    return error_response(exc.status_code, exc.detail, headers=headers)


class ErrorBoundary:
    """The last resort: an unexpected exception is logged once and answered as a JSON 500.

    Starlette's own server-error middleware re-raises after answering (and functions-framework's
    would then try to answer a second time); this one stops the exception here.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # once an answer has begun, the server can only close the connection
                await error_response(500, "internal error")(scope, receive, send)


AllowedMethods = Callable[[Scope], "Iterable[str] | None"]


class ResponseHeaders:
    """Security headers on every answer; CORS for the configured origins only (none by default).

    ``OPTIONS`` is answered here for every route (204 with ``Allow``, plus the CORS preflight
    headers when the origin is allowed); ``allowed_methods`` says which methods a path has.
    """

    def __init__(self, app: ASGIApp, cors_origins: Iterable[str], allowed_methods: AllowedMethods) -> None:
        self.app = app
        self.cors_origins = frozenset(cors_origins)
        self.allowed_methods = allowed_methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        origin = Headers(scope=scope).get("origin") if self.cors_origins else None
        allowed_origin = origin if origin and origin in self.cors_origins else None

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                raw = message.setdefault("headers", [])
                present = {name.lower() for name, _ in raw}
                # Plain appends (this runs on every answer); a header a route set itself stays as it is.
                raw.extend(pair for pair in _SECURITY_RAW if pair[0] not in present)
                if allowed_origin is not None:
                    headers = MutableHeaders(scope=message)
                    headers["Access-Control-Allow-Origin"] = allowed_origin
                    headers["Access-Control-Allow-Methods"] = CORS_METHODS
                    headers["Access-Control-Allow-Headers"] = CORS_HEADERS
                    headers.add_vary_header("Origin")
            await send(message)

        if scope["method"] == "OPTIONS":
            methods = self.allowed_methods(scope)
            if methods is None:
                response = error_response(404, "Not Found")
            else:
                response = Response(status_code=204, headers={"Allow": ", ".join(sorted({*methods, "OPTIONS"}))})
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)
