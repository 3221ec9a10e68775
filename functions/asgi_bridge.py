"""A minimal, in-process bridge from Function Compute's request shapes to an ASGI app.

For the FC bindings only (``functions.fc``: FC 3.0 HTTP events, FC 2.0 WSGI, and through it
the custom container): each request runs through the app to completion and the whole answer
comes back, which is all those bindings can return. Nothing streams through here, so the
HomePage built for these bindings does not offer event streams (``max_streams`` 0).

The app's coroutines run on one event loop per process, in a daemon thread started on first
use; the calling thread (the FC runtime's, or a gunicorn thread) waits for its answer.
"""

from __future__ import annotations

import asyncio
import http
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import quote

from starlette.types import ASGIApp, Message

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]
BODY_CHUNK = 65_536


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...


@dataclass
class AsgiAnswer:
    status: int
    headers: list[tuple[str, str]]
    body: bytes


class _LoopThread:
    """The process's event loop for bridged requests (one thread, started on first use)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None

    def loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop
        if loop is not None:
            return loop
        with self._lock:
            if self._loop is None:
                made = asyncio.new_event_loop()
                threading.Thread(target=made.run_forever, name="asgi-bridge-loop", daemon=True).start()
                self._loop = made
            return self._loop


_loop_thread = _LoopThread()


def call_asgi(app: ASGIApp, *, method: str, path: str, query_string: str, headers: Iterable[tuple[str, str]],
              body: bytes | _Readable, raw_path: str | None = None, client: tuple[str, int] = ("", 0),
              server: tuple[str, int] = ("FCRUNTIME", 9000), scheme: str = "http") -> AsgiAnswer:
    """One request through ``app``; blocks the calling thread (never the loop) until the answer is complete.

    ``body`` is the whole body, or a readable stream (``wsgi.input``) read in chunks as the app
    asks for them, so an app that stops reading at its size limit stops the read too.
    """
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method.upper(),
        "scheme": scheme,
        "path": path,
        "raw_path": (raw_path if raw_path is not None else quote(path)).encode("latin-1", "replace"),
        "root_path": "",
        "query_string": query_string.encode("latin-1", "replace"),
        "headers": [(name.lower().encode("latin-1"), value.encode("latin-1", "replace")) for name, value in headers],
        "client": client,
        "server": server,
    }
    future = asyncio.run_coroutine_threadsafe(_run(app, scope, body), _loop_thread.loop())
    return future.result()


async def _run(app: ASGIApp, scope: dict[str, Any], body: bytes | _Readable) -> AsgiAnswer:
    loop = asyncio.get_running_loop()
    answered = asyncio.Event()
    status = 500
    response_headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    body_done = False

    async def receive() -> Message:
        nonlocal body_done
        if body_done:
            await answered.wait()  # nothing more will come; the client "leaves" once answered
            return {"type": "http.disconnect"}
        if isinstance(body, bytes | bytearray):
            body_done = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}
        chunk = await loop.run_in_executor(None, body.read, BODY_CHUNK)
        body_done = not chunk
        return {"type": "http.request", "body": bytes(chunk or b""), "more_body": bool(chunk)}

    async def send(message: Message) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = int(message["status"])
            # ASGI names are lower case; FC's answers (a JSON object of headers) keep the usual spelling.
            response_headers.extend((_title(k.decode("latin-1")), v.decode("latin-1"))
                                    for k, v in message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                answered.set()

    try:
        await app(scope, receive, send)
    finally:
        answered.set()
    return AsgiAnswer(status, response_headers, b"".join(chunks))


def _title(name: str) -> str:
    return "-".join(part[:1].upper() + part[1:] for part in name.split("-"))


def wsgi_app(app: ASGIApp) -> WsgiApp:
    """``app`` as a WSGI app (FC 2.0's HTTP functions, the custom container's gunicorn)."""

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        headers = [(key[5:].replace("_", "-").lower(), str(value)) for key, value in environ.items()
                   if key.startswith("HTTP_")]
        for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
            if environ.get(key):
                headers.append((name, str(environ[key])))
        # WSGI carries the path as latin-1-decoded bytes; ASGI wants the UTF-8 text.
        path = str(environ.get("PATH_INFO") or "/").encode("latin-1").decode("utf-8", "replace")
        remote = str(environ.get("REMOTE_ADDR") or "")
        answer = call_asgi(
            app, method=str(environ.get("REQUEST_METHOD") or "GET"), path=path,
            query_string=str(environ.get("QUERY_STRING") or ""), headers=headers, body=_wsgi_body(environ),
            client=(remote, 0), server=(str(environ.get("SERVER_NAME") or ""), int(environ.get("SERVER_PORT") or 0)),
            scheme=str(environ.get("wsgi.url_scheme") or "http"),
        )
        try:
            reason = http.HTTPStatus(answer.status).phrase
        except ValueError:
            reason = ""
        start_response(f"{answer.status} {reason}".rstrip(), answer.headers)
        return [answer.body]

    return serve


class _Limited:
    """``wsgi.input`` read no further than CONTENT_LENGTH (PEP 3333: a server need not stop there)."""

    def __init__(self, stream: _Readable, remaining: int) -> None:
        self._stream = stream
        self._remaining = remaining

    def read(self, size: int = -1, /) -> bytes:
        if self._remaining <= 0:
            return b""
        wanted = self._remaining if size < 0 else min(size, self._remaining)
        chunk = bytes(self._stream.read(wanted))
        self._remaining = 0 if not chunk else self._remaining - len(chunk)
        return chunk


def _wsgi_body(environ: dict[str, Any]) -> _Readable | bytes:
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    if length.isdigit():
        return _Limited(environ["wsgi.input"], int(length))
    if "chunked" in str(environ.get("HTTP_TRANSFER_ENCODING") or "").lower():
        return _Limited(environ["wsgi.input"], 1 << 62)  # the server decodes the chunks and ends the stream
    return b""
