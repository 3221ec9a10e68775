"""Function Compute entry points: the HomePage and the processor on FC 2.0 and FC 3.0.

Handlers (``s.yaml`` names them as ``functions.fc.<name>``):

- ``homepage_http(event, context)``: FC 3.0 HTTP trigger (JSON event in, ``statusCode`` out);
  also answers API Gateway's event shape.
- ``homepage_wsgi(environ, start_response)``: FC 2.0 HTTP function (WSGI).
- ``process(event, context)``: the processor for the Kafka (EventBridge) trigger and direct
  invocation.
- ``initializer(context)``: builds the clients once per instance.

The import is kept light because it is on every cold start: Starlette, the adapters and the
domain load on first use, not here (bench/fc_import.py measures it).
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol
from urllib.parse import quote, unquote_to_bytes

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from functions.wiring import Services

log = logging.getLogger("barrage.fc")

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


@dataclass(frozen=True)
class Credentials:
    """What the Tablestore adapter needs from FC's STS keys (or env keys)."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None


def credentials_from(context: Any, environ: Mapping[str, str] | None = None) -> Credentials | None:
    """The function role's STS keys: from the context first, then ``ALIBABA_CLOUD_*`` env.

    ``None`` leaves the choice to the settings (long-lived keys, or no Tablestore at all).
    """
    creds = getattr(context, "credentials", None) if context is not None else None
    key_id = _attr(creds, "access_key_id") or _attr(creds, "accessKeyId")
    secret = _attr(creds, "access_key_secret") or _attr(creds, "accessKeySecret")
    token = _attr(creds, "security_token") or _attr(creds, "securityToken")
    if key_id and secret:
        return Credentials(key_id, secret, token or None)
    env = os.environ if environ is None else environ
    key_id, secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID", ""), env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET", "")
    if key_id and secret:
        return Credentials(key_id, secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None)
    return None


def _attr(obj: Any, name: str) -> str:
    if obj is None:
        return ""
    value = obj.get(name) if isinstance(obj, Mapping) else getattr(obj, name, None)
    return value if isinstance(value, str) else ""


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


_DEFAULT_LOGGER: logging.LoggerAdapter[logging.Logger] = logging.LoggerAdapter(log, {})


@dataclass(frozen=True)
class FcContext:
    """The context FC's Python runtime passes (PLATFORM.md section 1), same attribute names."""

    request_id: str
    credentials: Credentials
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
        credentials=Credentials(h.get("x-fc-access-key-id", ""), h.get("x-fc-access-key-secret", ""),
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
    return RequestLogger(logging.getLogger("barrage.fc.invoke"), {"fc_request_id": request_id})


# -- per-instance state ----------------------------------------------------------------------

_lock = threading.Lock()
_services: Services | None = None
_homepage: Starlette | None = None


def services(context: Any = None) -> Services:
    """The instance's services, built on first use when no initializer ran."""
    global _services
    if _services is None:
        with _lock:
            if _services is None:
                from functions.config import Settings
                from functions.wiring import build_services

                _services = build_services(Settings.from_environ(os.environ), credentials_from(context))
    return _services


def homepage_app(context: Any = None) -> Starlette:
    global _homepage
    if _homepage is None:
        from dataclasses import replace

        from functions.homepage import HomePageOptions, create_app

        built_services = services(context)
        # These bindings return whole answers (functions.asgi_bridge): no event streams, the page polls.
        options = replace(HomePageOptions.from_settings(built_services.settings), max_streams=0)
        built = create_app(built_services, options)
        with _lock:
            _homepage = _homepage or built
    return _homepage


def initializer(context: Any) -> None:
    """FC's initializer hook: clients are built once and reused by every invocation."""
    services(context)
    log.info("barrage services ready")


def reset() -> None:
    """Forget the instance state (tests; FC itself never calls this)."""
    global _services, _homepage
    with _lock:
        if _services is not None:
            _services.close()
        _services, _homepage = None, None


# -- the processor -----------------------------------------------------------------------------


class InvalidEvent(ValueError):
    """The payload is not an event at all (not JSON): a function error, never retried into success."""


def process(event: bytes | str, context: Any) -> dict[str, Any]:
    """Kafka trigger batches and direct invocations.

    Permanently invalid records are reported in the returned summary and skipped; any
    transient failure raises ``TransientProcessingError`` so FC retries the whole batch
    (idempotent writes make the retried records duplicates, not double writes).
    """
    from functions.processor import BadRequest, TransientProcessingError, decode_fc_event, handle, summary
    from handlers.process import OutcomeStatus

    built = services(context)
    payload = event.encode("utf-8") if isinstance(event, str) else bytes(event)
    try:
        decoded = decode_fc_event(payload, built.clock)
    except BadRequest as exc:
        raise InvalidEvent(f"processor: {exc}") from None
    outcomes = handle(decoded, built.store, built.clock, built.process_config, built.tracing)
    logger = _logger(context)
    for outcome in outcomes:
        level = logging.INFO if outcome.status in (OutcomeStatus.STORED, OutcomeStatus.DUPLICATE) else logging.WARNING
        logger.log(level, "record %s barrage %s %s%s", outcome.event_id, outcome.barrage_id,
                   outcome.status.value, f": {outcome.reason}" if outcome.reason else "")
    failed = {o.barrage_id or o.event_id: o.reason for o in outcomes if o.status is OutcomeStatus.FAILED}
    if failed:
        raise TransientProcessingError(failed)
    return summary(outcomes)


def _logger(context: Any) -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    # FC's context.logger stamps the request id on each line; use it when there is one.
    candidate = getattr(context, "logger", None)
    if isinstance(candidate, (logging.Logger, logging.LoggerAdapter)):
        return candidate
    return log


# -- HTTP: event shapes (each tried in order, as mangum does) ----------------------------------


@dataclass
class HttpRequest:
    method: str
    path: str  # decoded
    raw_path: str  # URL-encoded, as sent
    query_string: str
    headers: dict[str, str]
    body: bytes
    remote_addr: str = ""
    server_name: str = "FCRUNTIME"
    scheme: str = "http"


class EventShape(Protocol):
    name: ClassVar[str]

    @staticmethod
    def infer(event: Mapping[str, Any]) -> bool: ...

    @staticmethod
    def request(event: Mapping[str, Any]) -> HttpRequest: ...


def _body(event: Mapping[str, Any]) -> bytes:
    body = event.get("body") or ""
    if event.get("isBase64Encoded"):
        return base64.b64decode(body)
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _query(params: Any) -> str:
    if not isinstance(params, Mapping):
        return ""
    pairs: list[str] = []
    for key, value in params.items():
        # Repeated parameters arrive joined with commas; they are passed on as they came.
        values = value if isinstance(value, list) else [value]
        pairs.extend(f"{quote(str(key), safe='')}={quote(str(v), safe=',')}" for v in values)
    return "&".join(pairs)


def _headers(raw: Any) -> dict[str, str]:
    if not isinstance(raw, Mapping):
        return {}
    return {str(k): ",".join(map(str, v)) if isinstance(v, list) else str(v) for k, v in raw.items()}


class FC3HttpEvent:
    """FC 3.0 HTTP trigger (PLATFORM.md section 2)."""

    name: ClassVar[str] = "fc3-http"

    @staticmethod
    def infer(event: Mapping[str, Any]) -> bool:
        context = event.get("requestContext")
        return "rawPath" in event and isinstance(context, Mapping) and isinstance(context.get("http"), Mapping)

    @staticmethod
    def request(event: Mapping[str, Any]) -> HttpRequest:
        http = event["requestContext"]["http"]
        raw_path = str(event.get("rawPath") or "/")
        headers = _headers(event.get("headers"))
        proto = next((v for k, v in headers.items() if k.lower() == "x-forwarded-proto"), "http")
        return HttpRequest(
            method=str(http.get("method", "GET")).upper(),
            path=unquote_to_bytes(raw_path).decode("latin-1"),
            raw_path=raw_path,
            query_string=_query(event.get("queryParameters")),
            headers=headers,
            body=_body(event),
            remote_addr=str(http.get("sourceIp", "")),
            server_name=str(event["requestContext"].get("domainName") or "FCRUNTIME"),
            scheme=proto.split(",")[0].strip() or "http",
        )


class ApiGatewayEvent:
    """Alibaba Cloud API Gateway's event to a backend FC event function."""

    name: ClassVar[str] = "api-gateway"

    @staticmethod
    def infer(event: Mapping[str, Any]) -> bool:
        return "httpMethod" in event and "path" in event

    @staticmethod
    def request(event: Mapping[str, Any]) -> HttpRequest:
        path = str(event.get("path") or "/")
        return HttpRequest(
            method=str(event["httpMethod"]).upper(),
            path=path,
            raw_path=quote(path),
            query_string=_query(event.get("queryParameters")),
            headers=_headers(event.get("headers")),
            body=_body(event),
        )


EVENT_SHAPES: tuple[type[EventShape], ...] = (FC3HttpEvent, ApiGatewayEvent)


def infer_request(event: Mapping[str, Any]) -> HttpRequest:
    for shape in EVENT_SHAPES:
        if shape.infer(event):
            return shape.request(event)
    raise InvalidEvent("not an HTTP event: expected an FC 3.0 HTTP trigger event (rawPath, requestContext.http) "
                       "or an API Gateway event (httpMethod, path)")


def wsgi_environ(request: HttpRequest, context: Any = None) -> dict[str, Any]:
    """A WSGI environ with the keys FC's Python runtime sets (PLATFORM.md section 1)."""
    import io
    import sys

    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        "PATH_INFO": request.path,
        "RAW_URI": request.raw_path,
        "QUERY_STRING": request.query_string,
        "SERVER_NAME": request.server_name,
        "SERVER_PORT": "9000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.remote_addr,
        "CONTENT_TYPE": "application/octet-stream",
        "CONTENT_LENGTH": str(len(request.body)),
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(request.body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
        "fc.context": context,
        "fc.request_uri": request.raw_path + (f"?{request.query_string}" if request.query_string else ""),
    }
    for name, value in request.headers.items():
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key == "CONTENT_LENGTH":
            continue  # the body's real length wins over a header that may describe the encoded form
        else:
            http_key = f"HTTP_{key}"
            environ[http_key] = f"{environ[http_key]},{value}" if http_key in environ else value
    return environ


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


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


_TEXT_TYPES = ("text/", "application/json", "application/javascript", "application/xml", "image/svg+xml")


def _is_text(content_type: str) -> bool:
    media = content_type.split(";")[0].strip().lower()
    return media.startswith(_TEXT_TYPES) or media.endswith(("+json", "+xml"))


def http_result(response: HttpResponse) -> dict[str, Any]:
    """FC 3.0's answer shape; binary bodies as base64, repeated headers joined with commas."""
    headers: dict[str, str] = {}
    for name, value in response.headers:
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    content_type = next((v for k, v in headers.items() if k.lower() == "content-type"), "")
    if _is_text(content_type):
        try:
            return {"statusCode": response.status, "headers": headers, "isBase64Encoded": False,
                    "body": response.body.decode("utf-8")}
        except UnicodeDecodeError:
            pass
    return {"statusCode": response.status, "headers": headers, "isBase64Encoded": True,
            "body": base64.b64encode(response.body).decode("ascii")}


def homepage_http(event: bytes | str | Mapping[str, Any], context: Any) -> dict[str, Any]:
    """The HomePage behind an FC 3.0 HTTP trigger (or API Gateway)."""
    if isinstance(event, Mapping):
        parsed: Any = event
    else:
        try:
            parsed = json.loads(event)
        except ValueError as exc:
            raise InvalidEvent(f"homepage: event is not JSON: {exc}") from None
    if not isinstance(parsed, Mapping):
        raise InvalidEvent("homepage: event is not a JSON object")
    request = infer_request(parsed)
    app = homepage_app(context)
    from functions.asgi_bridge import call_asgi

    # request.path is WSGI-style (latin-1 characters of the bytes); ASGI wants the UTF-8 text.
    path = request.path.encode("latin-1").decode("utf-8", "replace")
    answer = call_asgi(app, method=request.method, path=path, raw_path=request.raw_path,
                       query_string=request.query_string, headers=request.headers.items(), body=request.body,
                       client=(request.remote_addr, 0), server=(request.server_name, 9000), scheme=request.scheme)
    return http_result(HttpResponse(answer.status, answer.headers, answer.body))


def homepage_wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    """The HomePage as an FC 2.0 HTTP function (WSGI; the runtime puts the context in the environ)."""
    from functions.asgi_bridge import wsgi_app

    return wsgi_app(homepage_app(environ.get("fc.context")))(environ, start_response)
