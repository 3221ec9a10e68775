"""An app with one HTTP function that shows what the server's limits do to an app (test_server_limits.py).

``GET /healthz`` answers at once. ``POST /read`` reads the whole body (after ``?wait=S`` seconds
when asked, an app slow to read) and answers its length; when ``receive()`` answers
``http.disconnect`` instead, it appends ``disconnect`` to the file ``$LIMITS_EVENTS``, so a test
can see what the app saw.
"""

from __future__ import annotations

import asyncio
import json
import os
from urllib.parse import parse_qs

from functions.app import App
from functions.asgi import Receive, Scope, Send

app: App[None] = App("limits", module=__name__)


async def _answer(send: Send, status: int, payload: object) -> None:
    body = json.dumps(payload).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _note(event: str) -> None:
    path = os.environ.get("LIMITS_EVENTS")
    if path:
        with open(path, "a", encoding="utf-8") as events:
            events.write(event + "\n")


async def probe(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/healthz":
        await _answer(send, 200, {"status": "ok"})
        return
    if scope["path"] != "/read":
        await _answer(send, 404, {"error": {"status": 404, "message": "no such route"}})
        return
    query = parse_qs(scope["query_string"].decode())
    await asyncio.sleep(float(query.get("wait", ["0"])[0]))
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            _note("disconnect")
            return
        size += len(message.get("body", b""))
        if not message.get("more_body", False):
            break
    _note(f"read {size}")
    await _answer(send, 200, {"bytes": size})


app.http("probe", asgi=probe)
