"""The FC custom-container and custom-runtime server for any function (PLATFORM.md §3).

FC sends HTTP functions' requests as they are (``x-fc-control-path: /http-invoke``) and event
functions' invocations as ``POST /invoke`` (the raw payload), plus an optional
``POST /initialize``, with the context in ``x-fc-*`` headers. ``container_app(function)`` is the
ASGI app that answers all of them:

- ``/initialize``: the instance's dependencies are built once (the FC initializer);
- ``/invoke``: an event function gets the payload as ``handler(event, context)`` would (EventBridge
  batches, a CloudEvent, a direct invocation); an HTTP function an FC 3.0 HTTP / API Gateway event;
- anything else: an HTTP function's app answers the request (``scope["fc.context"]`` holds the
  context); an event function takes it as CloudEvents over HTTP (a Knative sink on Alibaba Cloud
  Knative's FC workload class), and answers ``GET /healthz`` for probes.

A failed invocation answers 404 with ``x-fc-status: 404`` and FC's error JSON
(``errorMessage``, ``errorType``, ``stackTrace``), as FC's custom-runtime contract asks. Every
request is logged between ``FC Invoke Start RequestId`` / ``FC Invoke End RequestId`` lines.
"""

from __future__ import annotations

import sys
import uuid
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from functions.asgi import ASGIApp, Receive, Scope, Send, call, lifespan
from functions.bindings import InvalidInvocation, RequestRefused, parse_payload, pick
from functions.bindings.cloudevents_http import BadDelivery, read_body, respond_json, sink_app
from functions.fc import context_from_headers, error_document, serialise

if TYPE_CHECKING:
    from functions.app import AppFunction

MAX_INVOKE_BYTES = 32 * 1024 * 1024  # FC's synchronous invocation payload limit


def _say(line: str) -> None:
    # FC's log collection reads stdout; one write per line keeps lines whole.
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def container_app(function: AppFunction) -> ASGIApp:
    from functions.app import EventFunction, HttpFunction

    sink = sink_app(function) if isinstance(function, EventFunction) else None

    async def failed(send: Send, exc: BaseException) -> None:
        await respond_json(send, 404, error_document(exc), [(b"x-fc-status", b"404")])

    async def invoke(scope: Scope, receive: Receive, send: Send, headers: dict[str, str]) -> None:
        body = await read_body(receive, MAX_INVOKE_BYTES)
        context = context_from_headers(headers)
        try:
            if isinstance(function, HttpFunction):
                payload = parse_payload(body)
                shape = pick(function.shapes, payload, context, function.name)
                function.app.instance().credentials.observe(context)
                try:
                    request = shape.request(payload, context)
                except RequestRefused as exc:
                    response = exc.response()
                else:
                    response = await call(function.asgi(), request)
                result: Any = shape.respond(response, payload, context)
            else:
                result = await anyio.to_thread.run_sync(function, body, context)
        except Exception as exc:
            await failed(send, exc)
            return
        payload_bytes = serialise(result)
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"x-fc-status", b"200"),
                                (b"content-length", str(len(payload_bytes)).encode())]})
        await send({"type": "http.response.body", "body": payload_bytes})

    async def initialize(receive: Receive, send: Send, headers: dict[str, str]) -> None:
        await read_body(receive, MAX_INVOKE_BYTES)
        try:
            await anyio.to_thread.run_sync(function.app.initializer, context_from_headers(headers))
        except Exception as exc:
            await failed(send, exc)
            return
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"x-fc-status", b"200"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await lifespan(receive, send, function.app.reset)
            return
        if scope["type"] != "http":
            return
        headers = {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope["headers"]}
        control = headers.get("x-fc-control-path", "")
        path = scope.get("path", "/")
        if not control and path in ("/invoke", "/initialize") and (path == "/initialize" or sink is not None):
            control = path  # FC's runtime always names it; accept the bare path where it cannot clash
        request_id = headers.get("x-fc-request-id") or str(uuid.uuid4())
        _say(f"FC Invoke Start RequestId: {request_id}")
        try:
            if control in ("/invoke", "/initialize") and scope.get("method") != "POST":
                await respond_json(send, 405, {"errorMessage": f"{control} takes POST"}, [(b"allow", b"POST")])
            elif control == "/initialize":
                await initialize(receive, send, headers)
            elif control == "/invoke":
                await invoke(scope, receive, send, headers)
            elif sink is not None:
                await sink(scope, receive, send)
            else:
                assert isinstance(function, HttpFunction)
                context = context_from_headers(headers) if control else None
                function.app.instance().credentials.observe(context)
                await function.asgi()({**scope, "fc.context": context}, receive, send)
        except BadDelivery as exc:
            await respond_json(send, exc.status, {"errorMessage": str(exc)})
        except InvalidInvocation as exc:
            await failed(send, exc)
        finally:
            _say(f"FC Invoke End RequestId: {request_id}")

    return app
