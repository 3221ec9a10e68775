"""Serving an ASGI app as a functions-framework target (``functions-framework --asgi``).

functions-framework's aio mode calls an ``async`` target with a Starlette ``Request`` and,
when it returns a ``Response``, awaits ``response(scope, receive, send)``. A Starlette
``Response`` is itself an ASGI app, so a target can return one that forwards the request's own
scope, receive and send to a whole app: routing, request bodies and streamed answers (SSE)
pass through untouched, with no copy and no thread.
"""

from __future__ import annotations

from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send


class AppResponse(Response):
    """The answer of ``app`` to the request being served: ``app`` runs when the response is sent.

    It holds nothing per request, so one instance serves every request.
    """

    def __init__(self, app: ASGIApp) -> None:  # no body, status or headers of its own: the app sends them
        self.app = app
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)
