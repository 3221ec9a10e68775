"""Functions for the local FC 3.0 API tests: one per way FC runs code.

- ``echo`` (a plain handler, for the built-in python3.10 runtime);
- ``app`` (an App, served by the package's ``bootstrap`` on a custom runtime): ``tally``, an
  event function that fails on ``{"fail": true}``, and ``web``, an HTTP function that streams.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path
from typing import Any

from functions.app import App, Invocation, Outcome, Record
from functions.records import ok

log = logging.getLogger("fc3_app")


def echo(event: bytes, context: Any) -> dict[str, Any]:
    log.info("echo got %d bytes", len(event))
    if event == b"boom":
        raise RuntimeError("echo was told to fail")
    return {"event": event.decode("utf-8", "replace"), "request_id": context.request_id,
            "function": context.function.name, "qualifier": context.service.qualifier}


app: App[None] = App("fc3probe", module=__name__)


@app.event("tally")
def tally(record: Record, invocation: Invocation[Any]) -> Outcome:
    data = record.data if isinstance(record.data, dict) else {}
    if data.get("fail"):
        raise RuntimeError("tally was told to fail")
    print(f"tally saw record {record.id}", flush=True)
    return ok(pid=os.getpid(), function=os.environ.get("FC_FUNCTION_NAME", ""))


async def _web(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        # The first event, then the rest only once the client has seen it (it creates the marker
        # file): an answer that is not streamed gets "gave up" instead, after 10 s.
        marker = Path(scope["query_string"].decode().partition("marker=")[2])
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]})
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        for _ in range(200):
            if marker.exists():
                break
            await asyncio.sleep(0.05)
        last = b"data: after the client saw the first\n\n" if marker.exists() else b"data: gave up\n\n"
        await send({"type": "http.response.body", "body": last})
        return
    context = scope.get("fc.context")
    body = json.dumps({"path": scope["path"], "method": scope["method"],
                       "request_id": getattr(context, "request_id", None)}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
    await send({"type": "http.response.body", "body": body})


web = app.http("web", asgi=_web)
