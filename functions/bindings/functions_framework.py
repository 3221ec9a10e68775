"""functions-framework targets: any function served by ``functions-framework --asgi``.

In ASGI mode functions-framework calls the target with a Starlette ``Request`` and serves the
``Response`` it returns; a Starlette response is itself an ASGI app, so the target returns one
that hands the request's scope, receive and send to the function's own ASGI app. The app then
answers exactly as it would under any ASGI server: its own routes, statuses and streams.
(Without ``--asgi`` functions-framework passes a Flask request: that is refused with a message.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from functions.asgi import ASGIApp, Receive, Scope, Send


class AsgiPassthrough(Response):
    """A response that is another ASGI app answering the same request."""

    def __init__(self, app: ASGIApp) -> None:  # no super().__init__: nothing of a plain response is used
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class NotAsgi(TypeError):
    """The target was called by functions-framework's Flask server (started without --asgi)."""


def target(app: Callable[[], ASGIApp]) -> Callable[[Any], Any]:
    """A target that serves the app ``app()`` returns (built on first use, once)."""
    built: list[ASGIApp] = []

    async def serve(request: Any) -> Response:
        if not isinstance(request, Request):
            raise NotAsgi("this target is an ASGI app: run functions-framework with --asgi")
        if not built:
            built.append(app())
        return AsgiPassthrough(built[0])

    return serve
