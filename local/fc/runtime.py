"""What FC's Python runtime does inside one instance, in-process.

Handler strings ("module.function") resolve against a code directory; the initializer runs
once per instance; event handlers get bytes and their return value is JSON-serialised unless
it is str/bytes; WSGI handlers get FC's environ; FC 3.0 HTTP handlers get the JSON HTTP event.
"""

from __future__ import annotations

import base64
import importlib
import io
import json
import logging
import os
import sys
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qsl, quote

from functions.fc import (
    Credentials,
    FcContext,
    FunctionMeta,
    HttpResponse,
    ServiceMeta,
    Tracing,
    call_wsgi,
    error_document,
    request_logger,
    serialise,
)

Kind = Literal["event", "wsgi", "http"]
LOG_TAIL_BYTES = 4096


class FunctionError(Exception):
    """The function raised: FC's UnhandledInvocationError, with the error JSON FC sends."""

    def __init__(self, error: Mapping[str, Any], log_tail: str = "") -> None:
        super().__init__(str(error.get("errorMessage", "")))
        self.error = dict(error)
        self.log_tail = log_tail


def new_context(function: FunctionMeta, service: ServiceMeta, credentials: Credentials | None = None,
                request_id: str | None = None, region: str = "cn-hangzhou", account_id: str = "0",
                retry_count: int = 0) -> FcContext:
    rid = request_id or str(uuid.uuid4())
    return FcContext(
        request_id=rid,
        credentials=credentials or Credentials("", "", None),
        function=function,
        service=service,
        region=region,
        account_id=account_id,
        retry_count=retry_count,
        tracing=Tracing(),
        logger=request_logger(rid),
    )


def context_headers(context: FcContext) -> dict[str, str]:
    """The x-fc-* headers the runtime receives for a context (PLATFORM.md section 1)."""
    headers = {
        "x-fc-request-id": context.request_id,
        "x-fc-access-key-id": context.credentials.access_key_id,
        "x-fc-access-key-secret": context.credentials.access_key_secret,
        "x-fc-security-token": context.credentials.security_token or "",
        "x-fc-function-name": context.function.name,
        "x-fc-function-handler": context.function.handler,
        "x-fc-function-memory": str(context.function.memory),
        "x-fc-function-timeout": str(context.function.timeout),
        "x-fc-service-name": context.service.name,
        "x-fc-service-logproject": context.service.log_project,
        "x-fc-service-logstore": context.service.log_store,
        "x-fc-qualifier": context.service.qualifier,
        "x-fc-version-id": context.service.version_id,
        "x-fc-region": context.region,
        "x-fc-account-id": context.account_id,
        "x-fc-retry-count": str(context.retry_count),
    }
    return {k: v for k, v in headers.items() if v}


# -- log capture: what FC returns as x-fc-log-result --------------------------------------------

_capture = threading.local()


class _TailHandler(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        buffer: list[str] | None = getattr(_capture, "lines", None)
        if buffer is not None:
            buffer.append(self.format(record))


_tail_handler = _TailHandler()
_tail_handler.setFormatter(logging.Formatter("%(asctime)s [%(levelname)s] %(message)s"))
_install_lock = threading.Lock()


def _install_tail_handler() -> None:
    with _install_lock:
        root = logging.getLogger()
        if _tail_handler not in root.handlers:
            root.addHandler(_tail_handler)
            if root.level > logging.INFO or root.level == logging.NOTSET:
                root.setLevel(logging.INFO)


class captured_logs:
    """Collects the log lines this thread emits during one invocation."""

    def __init__(self, request_id: str) -> None:
        self.request_id = request_id
        self.lines: list[str] = []

    def __enter__(self) -> captured_logs:
        _install_tail_handler()
        self.lines.append(f"FC Invoke Start RequestId: {self.request_id}")
        _capture.lines = self.lines
        return self

    def __exit__(self, *exc: object) -> None:
        _capture.lines = None
        self.lines.append(f"FC Invoke End RequestId: {self.request_id}")

    def tail(self) -> str:
        text = "\n".join(self.lines) + "\n"
        return text.encode("utf-8")[-LOG_TAIL_BYTES:].decode("utf-8", "ignore")


# -- an instance -------------------------------------------------------------------------------


def resolve_handler(code_dir: Path, handler: str) -> Callable[..., Any]:
    """"module.function" (module may be dotted) from the code directory, as FC resolves it."""
    module_name, _, attribute = handler.rpartition(".")
    if not module_name or not attribute:
        raise ValueError(f"handler {handler!r} is not module.function")
    location = str(code_dir.resolve())
    if location not in sys.path:
        sys.path.insert(0, location)
    module = importlib.import_module(module_name)
    target: Any = getattr(module, attribute, None)
    if not callable(target):
        raise AttributeError(f"handler {handler!r}: {module_name} has no callable {attribute!r}")
    resolved: Callable[..., Any] = target
    return resolved


@dataclass
class HttpCall:
    method: str
    path: str  # decoded
    query_string: str
    headers: list[tuple[str, str]]
    body: bytes
    remote_addr: str = "127.0.0.1"
    host: str = "localhost"


class Instance:
    """One function instance: handler resolved once, initializer run once."""

    def __init__(self, code_dir: Path, handler: str, kind: Kind = "event", initializer: str | None = None) -> None:
        self.code_dir = code_dir
        self.handler_name = handler
        self.kind = kind
        self.initializer_name = initializer
        self._handler: Callable[..., Any] | None = None
        self._initialized = initializer is None
        self._lock = threading.Lock()

    def handler(self) -> Callable[..., Any]:
        if self._handler is None:
            self._handler = resolve_handler(self.code_dir, self.handler_name)
        return self._handler

    def initialize(self, context: FcContext) -> None:
        """Runs the initializer if it has not succeeded yet (FC retries a failed one next time)."""
        if self._initialized:
            return
        with self._lock:
            if self._initialized:
                return
            assert self.initializer_name is not None
            with captured_logs(context.request_id) as logs:
                try:
                    resolve_handler(self.code_dir, self.initializer_name)(context)
                except Exception as exc:
                    raise FunctionError(error_document(exc), logs.tail()) from exc
            self._initialized = True

    def invoke(self, payload: bytes, context: FcContext) -> tuple[bytes, str]:
        """An event invocation: (serialised result, log tail); raises FunctionError."""
        self.initialize(context)
        with captured_logs(context.request_id) as logs:
            try:
                if self.kind == "wsgi":
                    raise TypeError("an FC 2.0 HTTP (WSGI) function is invoked through its HTTP trigger")
                result = serialise(self.handler()(payload, context))
            except Exception as exc:
                error = error_document(exc)
                logging.getLogger("barrage.fc.runtime").error("%s", error["errorMessage"])
                raise FunctionError(error, logs.tail()) from exc
        return result, logs.tail()

    def http(self, call: HttpCall, context: FcContext) -> tuple[HttpResponse, str]:
        """An HTTP-trigger invocation through the handler's own contract (WSGI or FC 3.0 event)."""
        self.initialize(context)
        with captured_logs(context.request_id) as logs:
            try:
                if self.kind == "wsgi":
                    response = call_wsgi(self.handler(), fc2_environ(call, context, self.handler_name))
                else:
                    event = fc3_http_event(call, context)
                    response = fc3_response(self.handler()(serialise(event), context))
            except Exception as exc:
                raise FunctionError(error_document(exc), logs.tail()) from exc
        return response, logs.tail()


def fc2_environ(call: HttpCall, context: FcContext, handler: str) -> dict[str, Any]:
    """The environ FC 2.0's Python runtime builds (os.environ plus the request keys)."""
    environ: dict[str, Any] = dict(os.environ)
    environ.update({
        "SERVER_NAME": "FCRUNTIME", "SERVER_PORT": "9000", "SERVER_PROTOCOL": "HTTP/1.1",
        "REQUEST_METHOD": call.method, "PATH_INFO": call.path, "SCRIPT_NAME": "",
        "QUERY_STRING": call.query_string, "REMOTE_ADDR": call.remote_addr,
        "CONTENT_TYPE": "application/octet-stream", "CONTENT_LENGTH": str(len(call.body)),
        "wsgi.version": (1, 0), "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(call.body),
        "wsgi.errors": sys.stderr, "wsgi.multithread": True, "wsgi.multiprocess": False, "wsgi.run_once": False,
        "fc.context": context,
        "fc.request_uri": quote(call.path) + (f"?{call.query_string}" if call.query_string else ""),
        "HTTP_X_FC_FUNCTION_HANDLER": handler,
    })
    for name, value in call.headers:
        key = name.upper().replace("-", "_")
        if key == "CONTENT_TYPE":
            environ["CONTENT_TYPE"] = value
        elif key != "CONTENT_LENGTH":
            http_key = f"HTTP_{key}"
            # Repeated headers are joined with a comma, as the runtime does.
            environ[http_key] = f"{environ[http_key]},{value}" if http_key in environ else value
    return environ


def _is_text(body: bytes) -> bool:
    try:
        body.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def fc3_http_event(call: HttpCall, context: FcContext) -> dict[str, Any]:
    """The FC 3.0 HTTP trigger event for a request (PLATFORM.md section 2)."""
    import time

    headers: dict[str, str] = {}
    for name, value in call.headers:
        canonical = "-".join(part.capitalize() for part in name.split("-"))
        headers[canonical] = f"{headers[canonical]},{value}" if canonical in headers else value
    query: dict[str, str] = {}
    for key, value in parse_qsl(call.query_string, keep_blank_values=True):
        query[key] = f"{query[key]},{value}" if key in query else value
    text = _is_text(call.body)
    now = time.time()
    return {
        "version": "v1",
        "rawPath": quote(call.path),
        "body": call.body.decode("utf-8") if text else base64.b64encode(call.body).decode("ascii"),
        "isBase64Encoded": not text,
        "headers": headers,
        "queryParameters": query,
        "requestContext": {
            "accountId": context.account_id,
            "domainName": call.host,
            "domainPrefix": call.host.split(".")[0],
            "http": {"method": call.method, "path": call.path, "protocol": "HTTP/1.1",
                     "sourceIp": call.remote_addr, "userAgent": headers.get("User-Agent", "")},
            "requestId": context.request_id,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "timeEpoch": str(int(now * 1000)),
        },
    }


def fc3_response(result: Any) -> HttpResponse:
    """What FC 3.0 makes of an HTTP handler's return value."""
    if isinstance(result, (bytes, str)):
        try:
            result = json.loads(result)
        except ValueError:
            return HttpResponse(200, [], serialise(result))
    if not isinstance(result, Mapping) or "statusCode" not in result:
        return HttpResponse(200, [("Content-Type", "application/json")], serialise(result))
    body = result.get("body") or ""
    raw = base64.b64decode(body) if result.get("isBase64Encoded") else serialise(body)
    headers = [(str(k), str(v)) for k, v in (result.get("headers") or {}).items()]
    return HttpResponse(int(result["statusCode"]), headers, raw)
