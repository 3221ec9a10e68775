"""ASGI plumbing the bindings share: a request as an ASGI scope, one call collected, a loop per process.

HTTP functions are ASGI apps. A server (``functions.serve``: functions-framework's ASGI app or the
custom container, under uvicorn) calls them directly; FC's built-in runtimes hand over one request at a time
as an event (FC 3.0) or a WSGI environ (FC 2.0), so ``call`` runs the app for that request on
one long-lived event loop per process (``LoopThread``): state the app keeps on its loop
(clients, background tasks) survives between invocations, as it would under a server.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable, Coroutine, MutableMapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import asyncio

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

T = TypeVar("T")


@dataclass
class HttpRequest:
    """One HTTP request, whatever carried it."""

    method: str
    path: str  # decoded
    raw_path: str  # URL-encoded, as sent
    query_string: str
    headers: list[tuple[str, str]]
    body: bytes
    client: tuple[str, int] | None = None
    server: tuple[str, int] = ("FCRUNTIME", 9000)
    scheme: str = "http"
    # Platform context the app can read from the scope (``scope["fc.context"]``).
    extensions: dict[str, Any] = field(default_factory=dict)

    def header(self, name: str, default: str = "") -> str:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), default)


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str, default: str = "") -> str:
        lowered = name.lower()
        return next((v for k, v in self.headers if k.lower() == lowered), default)


def scope_of(request: HttpRequest) -> Scope:
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method,
        "scheme": request.scheme,
        "path": request.path,
        "raw_path": request.raw_path.encode("latin-1", "replace"),
        "root_path": "",
        "query_string": request.query_string.encode("latin-1", "replace"),
        "headers": [(k.lower().encode("latin-1", "replace"), v.encode("latin-1", "replace"))
                    for k, v in request.headers],
        "client": request.client,
        "server": request.server,
    }
    scope.update(request.extensions)
    return scope


class ResponseError(RuntimeError):
    """The app broke the ASGI protocol (no response started, or a message out of order)."""


async def call(app: ASGIApp, request: HttpRequest) -> HttpResponse:
    """Run ``app`` for one request and collect its whole response."""
    import asyncio  # here, not at the top: FC's cold start imports this module, and asyncio is not light

    body_sent = False
    disconnect = asyncio.Event()
    status: int | None = None
    headers: list[tuple[str, str]] = []
    chunks: list[bytes] = []
    done = False

    async def receive() -> Message:
        nonlocal body_sent
        if not body_sent:
            body_sent = True
            return {"type": "http.request", "body": request.body, "more_body": False}
        await disconnect.wait()  # the request is over once the response is
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, done
        kind = message.get("type")
        if kind == "http.response.start":
            if status is not None:
                raise ResponseError("http.response.start sent twice")
            status = int(message["status"])
            headers.extend((bytes(k).decode("latin-1"), bytes(v).decode("latin-1"))
                           for k, v in message.get("headers", []))
        elif kind == "http.response.body":
            if status is None:
                raise ResponseError("http.response.body before http.response.start")
            chunks.append(bytes(message.get("body", b"")))
            if not message.get("more_body", False):
                done = True
                disconnect.set()

    try:
        await app(scope_of(request), receive, send)
    finally:
        disconnect.set()
    if status is None:
        raise ResponseError("the app returned without starting a response")
    if not done:
        raise ResponseError("the app returned before the end of its response body")
    return HttpResponse(status, headers, b"".join(chunks))


class LoopThread:
    """One event loop in a daemon thread; sync code submits coroutines and waits for them."""

    def __init__(self, name: str = "functions-asgi-loop") -> None:
        self._name = name
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _start(self) -> asyncio.AbstractEventLoop:
        import asyncio

        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                threading.Thread(target=run, name=self._name, daemon=True).start()
                ready.wait()
                self._loop = loop
            return self._loop

    def run(self, coroutine: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        import asyncio

        loop = self._loop or self._start()
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            coroutine.close()
            raise RuntimeError("LoopThread.run called from its own loop: await the coroutine instead")
        return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout)


async def lifespan(receive: Receive, send: Send, on_shutdown: Callable[[], None]) -> None:
    """An ASGI lifespan: nothing to start (apps build lazily), ``on_shutdown`` at the end."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            on_shutdown()
            await send({"type": "lifespan.shutdown.complete"})
            return
