"""The custom-container (and custom-runtime) server for Function Compute.

FC forwards HTTP functions' requests as they are (``x-fc-control-path: /http-invoke``) and
event functions' invocations as ``POST /invoke`` / ``POST /initialize`` with the context in
``x-fc-*`` headers (PLATFORM.md section 3). This module turns those into calls of the same
bindings as the code package (``functions.fc``), and serves them with gunicorn.

Run it: ``barrage serve --workload-class fc --role homepage|processor``.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import traceback
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from functions import fc

log = logging.getLogger("barrage.fc.container")

ROLES = ("homepage", "processor")
DEFAULT_PORT = 9000


def listen_port(environ: Mapping[str, str]) -> int:
    """FC_SERVER_PORT / CAPort / PORT, else FC's default 9000."""
    for name in ("FC_SERVER_PORT", "CAPort", "PORT"):
        value = environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return DEFAULT_PORT


def _headers(environ: Mapping[str, Any]) -> dict[str, str]:
    headers = {key[5:].replace("_", "-").lower(): str(value) for key, value in environ.items()
               if key.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = str(environ["CONTENT_TYPE"])
    return headers


def _read_body(environ: Mapping[str, Any]) -> bytes:
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    stream = environ["wsgi.input"]
    return bytes(stream.read(int(length))) if length.isdigit() else bytes(stream.read())


def error_body(exc: BaseException) -> bytes:
    """The error JSON FC reports for an unhandled function error."""
    return json.dumps({
        "errorMessage": str(exc),
        "errorType": type(exc).__name__,
        "stackTrace": traceback.format_exception(type(exc), exc, exc.__traceback__),
    }).encode("utf-8")


def _say(line: str) -> None:
    # FC's log collection reads stdout; one write per line keeps lines whole across threads.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class ContainerApp:
    """One WSGI app for both roles: routing by ``x-fc-control-path``, else by path."""

    def __init__(self, role: str) -> None:
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, got {role!r}")
        self.role = role

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = _headers(environ)
        request_id = headers.get("x-fc-request-id") or str(uuid.uuid4())
        control = headers.get("x-fc-control-path") or self._control_from_path(environ)
        _say(f"FC Invoke Start RequestId: {request_id}")
        try:
            if control in ("/invoke", "/initialize") and environ.get("REQUEST_METHOD") != "POST":
                return self._answer(start_response, 405, b'{"errorMessage":"use POST"}')
            if control == "/initialize":
                return self._initialize(environ, headers, start_response)
            if control == "/invoke":
                return self._invoke(environ, headers, start_response)
            if self.role == "processor":
                return self._answer(start_response, 404, b'{"errorMessage":"the processor is an event function: '
                                    b'POST /invoke"}')
            context = fc.context_from_headers(headers)
            environ["fc.context"] = context
            environ["fc.request_uri"] = environ.get("RAW_URI") or environ.get("PATH_INFO", "/")
            return fc.homepage_wsgi(environ, start_response)
        finally:
            _say(f"FC Invoke End RequestId: {request_id}")

    def _control_from_path(self, environ: Mapping[str, Any]) -> str:
        path = str(environ.get("PATH_INFO", ""))
        # The HomePage has no /invoke route, so these paths are unambiguous even without the header.
        if path in ("/initialize", "/invoke") and (self.role == "processor" or path == "/initialize"):
            return path
        return "/http-invoke"

    @staticmethod
    def _answer(start_response: Callable[..., Any], status: int, body: bytes,
                extra: list[tuple[str, str]] | None = None) -> list[bytes]:
        reason = {200: "OK", 404: "Not Found", 405: "Method Not Allowed"}.get(status, "")
        start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                              ("Content-Length", str(len(body))), *(extra or [])])
        return [body]

    def _initialize(self, environ: dict[str, Any], headers: Mapping[str, str],
                    start_response: Callable[..., Any]) -> list[bytes]:
        _read_body(environ)
        try:
            fc.initializer(fc.context_from_headers(headers))
        except Exception as exc:
            log.exception("initializer failed")
            # FC's custom-runtime contract: 404 plus x-fc-status 404 marks a failed call.
            return self._answer(start_response, 404, error_body(exc), [("x-fc-status", "404")])
        return self._answer(start_response, 200, b"", [("x-fc-status", "200")])

    def _invoke(self, environ: dict[str, Any], headers: Mapping[str, str],
                start_response: Callable[..., Any]) -> list[bytes]:
        body = _read_body(environ)
        context = fc.context_from_headers(headers)
        try:
            if self.role == "processor":
                result: Any = fc.process(body, context)
            else:
                result = fc.homepage_http(body, context)
        except Exception as exc:
            log.warning("invocation %s failed: %s", context.request_id, exc)
            return self._answer(start_response, 404, error_body(exc), [("x-fc-status", "404")])
        payload = result if isinstance(result, bytes) else (
            result.encode("utf-8") if isinstance(result, str) else json.dumps(result, ensure_ascii=False).encode())
        return self._answer(start_response, 200, payload, [("x-fc-status", "200")])


def serve(role: str, host: str = "0.0.0.0", port: int | None = None, threads: int | None = None) -> None:
    """Serve with gunicorn (one worker, threads): FC scales by instances, not processes."""
    import importlib

    # gunicorn ships no type information; it is reached through import_module so it stays Any.
    BaseApplication: Any = importlib.import_module("gunicorn.app.base").BaseApplication
    app = ContainerApp(role)
    bind_port = port if port is not None else listen_port(os.environ)
    options = {
        "bind": f"{host}:{bind_port}",
        "workers": 1,
        "threads": threads or int(os.environ.get("THREADS", "8")),
        "worker_class": "gthread",
        "timeout": 0,  # FC enforces the function timeout itself
        "accesslog": None,
        "loglevel": "warning",
    }

    class _Server(BaseApplication):  # type: ignore[misc]  # subclassing an Any base
        def load_config(self) -> None:
            for key, value in options.items():
                self.cfg.set(key, value)

        def load(self) -> ContainerApp:
            return app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    _say(f"barrage FC custom container ({role}) on {host}:{bind_port}")
    _Server().run()
