"""Function Compute's invocation context, as its runtimes build it (PLATFORM.md §1, §3).

FC's built-in Python runtimes pass ``context`` to every handler; custom runtimes and custom
containers receive the same facts as ``x-fc-*`` request headers, and ``context_from_headers``
rebuilds the object from them, with the attribute names handlers already use. ``call_wsgi``
runs a WSGI app for one request as FC 2.0's runtime does (the local FC uses it);
``error_document`` and ``serialise`` are how FC reports a handler's error and return value.
"""

from __future__ import annotations

import json
import logging
import traceback
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from functions.asgi import HttpResponse as HttpResponse  # re-exported: the local FC runtime answers with it
from functions.lifecycle import AccessKey

log = logging.getLogger("functions.fc")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
Credentials = AccessKey  # FC's name for the keys in ``context.credentials``


@dataclass(frozen=True)
class FunctionMeta:
    name: str = ""
    handler: str = ""
    memory: int = 512
    timeout: int = 3


@dataclass(frozen=True)
class ServiceMeta:
    name: str = ""
    log_project: str = ""
    log_store: str = ""
    qualifier: str = "LATEST"
    version_id: str = ""


@dataclass(frozen=True)
class Tracing:
    span_context: str = ""
    jaeger_endpoint: str = ""
    span_baggages: str = ""
    parent_span_id: str = ""


if TYPE_CHECKING:
    _LoggerAdapter = logging.LoggerAdapter[logging.Logger]
else:  # LoggerAdapter is subscriptable only from Python 3.11; FC runs 3.10
    _LoggerAdapter = logging.LoggerAdapter


class RequestLogger(_LoggerAdapter):
    """A logger whose lines carry the request id, as FC's ``context.logger`` does."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        request_id = (self.extra or {}).get("fc_request_id", "")
        return (f"{request_id} {msg}" if request_id else msg), kwargs


def request_logger(request_id: str) -> logging.LoggerAdapter[logging.Logger]:
    return RequestLogger(logging.getLogger("functions.fc.invoke"), {"fc_request_id": request_id})


_DEFAULT_LOGGER: logging.LoggerAdapter[logging.Logger] = request_logger("")


@dataclass(frozen=True)
class FcContext:
    """The context FC's Python runtime passes, with the same attribute names."""

    request_id: str
    credentials: AccessKey
    function: FunctionMeta
    service: ServiceMeta
    region: str = ""
    account_id: str = ""
    retry_count: int = 0
    tracing: Tracing = Tracing()
    logger: logging.LoggerAdapter[logging.Logger] = _DEFAULT_LOGGER


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default


def context_from_headers(headers: Mapping[str, str]) -> FcContext:
    """The context as the runtime builds it from the ``x-fc-*`` request headers."""
    h = {k.lower(): v for k, v in headers.items()}
    request_id = h.get("x-fc-request-id", "")
    return FcContext(
        request_id=request_id,
        credentials=AccessKey(h.get("x-fc-access-key-id", ""), h.get("x-fc-access-key-secret", ""),
                              h.get("x-fc-security-token") or None),
        function=FunctionMeta(h.get("x-fc-function-name", ""), h.get("x-fc-function-handler", ""),
                              _int(h.get("x-fc-function-memory"), 512), _int(h.get("x-fc-function-timeout"), 3)),
        service=ServiceMeta(h.get("x-fc-service-name", ""), h.get("x-fc-service-logproject", ""),
                            h.get("x-fc-service-logstore", ""), h.get("x-fc-qualifier", "LATEST"),
                            h.get("x-fc-version-id", "")),
        region=h.get("x-fc-region", ""),
        account_id=h.get("x-fc-account-id", ""),
        retry_count=_int(h.get("x-fc-retry-count"), 0),
        tracing=Tracing(h.get("x-fc-tracing-opentracing-span-context", ""),
                        h.get("x-fc-tracing-jaeger-endpoint", ""),
                        h.get("x-fc-tracing-opentracing-span-baggages", ""), ""),
        logger=request_logger(request_id),
    )


def call_wsgi(app: WsgiApp, environ: dict[str, Any]) -> HttpResponse:
    """Runs a WSGI app to completion and collects its answer."""
    started: dict[str, Any] = {}
    chunks: list[bytes] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], None]:
        started["status"], started["headers"] = status, headers
        return chunks.append

    result = app(environ, start_response)
    try:
        chunks.extend(result)
    finally:
        close = getattr(result, "close", None)
        if callable(close):
            close()
    return HttpResponse(int(str(started["status"]).split()[0]), list(started["headers"]), b"".join(chunks))


def error_document(exc: BaseException) -> dict[str, Any]:
    """The error JSON FC reports for an unhandled function error."""
    return {
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": [line.rstrip("\n") for line in traceback.format_exception(type(exc), exc, exc.__traceback__)],
    }


def serialise(result: Any) -> bytes:
    """A handler's return value as FC sends it: bytes and text as they are, anything else as JSON."""
    if isinstance(result, bytes):
        return result
    if isinstance(result, str):
        return result.encode("utf-8")
    return json.dumps(result, ensure_ascii=False).encode("utf-8")
