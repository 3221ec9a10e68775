"""A tiny ASGI app that echoes what it was asked, for the binding tests (no framework involved)."""

from __future__ import annotations

import json

from functions.asgi import Receive, Scope, Send


async def echo(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    context = scope.get("fc.context")
    payload = {
        "method": scope["method"], "path": scope["path"], "raw_path": scope["raw_path"].decode(),
        "query": scope["query_string"].decode(), "body": body.decode("utf-8", "replace"),
        "headers": {k.decode(): v.decode() for k, v in scope["headers"]},
        "client": list(scope["client"]) if scope.get("client") else None,
        "request_id": getattr(context, "request_id", None),
    }
    if scope["path"] == "/binary":
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"image/png")]})
        await send({"type": "http.response.body", "body": b"\x89PNG\x00", "more_body": True})
        await send({"type": "http.response.body", "body": b"\xff"})
        return
    encoded = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": 201,
                "headers": [(b"content-type", b"application/json"), (b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]})
    await send({"type": "http.response.body", "body": encoded})
