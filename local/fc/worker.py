"""One local FC instance as a process, speaking FC's custom-runtime protocol on 127.0.0.1.

The local API server starts one per function (its own environment variables, its own
module state, as a real instance), then forwards ``POST /invoke``, ``POST /initialize`` and
HTTP requests (``x-fc-control-path: /http-invoke``) with the context in ``x-fc-*`` headers.
Answers carry ``x-fc-status`` (200 / 404 on a function error) and the log tail, base64, in
``x-fc-log-result``.

    python -m local.fc.worker --code-dir DIR --handler functions.fc.process --kind event
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from werkzeug.serving import make_server
from werkzeug.wrappers import Request, Response

from functions.fc import context_from_headers
from local.fc.runtime import FunctionError, HttpCall, Instance, Kind


def _tail_header(tail: str) -> tuple[str, str]:
    return "x-fc-log-result", base64.b64encode(tail.encode("utf-8")).decode("ascii")


def _failed(error: FunctionError) -> Response:
    response = Response(json.dumps(error.error), status=404, content_type="application/json")
    response.headers["x-fc-status"] = "404"
    response.headers.set(*_tail_header(error.log_tail))
    return response


def create_worker_app(instance: Instance) -> Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]:
    @Request.application
    def app(request: Request) -> Response:
        context = context_from_headers(dict(request.headers))
        control = request.headers.get("x-fc-control-path", "/http-invoke")
        try:
            if control == "/initialize":
                instance.initialize(context)
                return Response(b"", status=200, headers={"x-fc-status": "200"})
            if control == "/invoke":
                result, tail = instance.invoke(request.get_data(), context)
                response = Response(result, status=200, content_type="application/octet-stream")
                response.headers["x-fc-status"] = "200"
                response.headers.set(*_tail_header(tail))
                return response
            forwarded = [(k, v) for k, v in request.headers.items() if not k.lower().startswith("x-fc-")]
            call = HttpCall(request.method, request.path, request.query_string.decode("latin-1"), forwarded,
                            request.get_data(), request.headers.get("x-forwarded-for", "127.0.0.1"),
                            request.headers.get("x-forwarded-host") or request.host)
            answer, tail = instance.http(call, context)
            response = Response(answer.body, status=answer.status)
            response.headers.clear()
            for name, value in answer.headers:
                response.headers.add(name, value)
            response.headers.set(*_tail_header(tail))
            return response
        except FunctionError as error:
            return _failed(error)

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--code-dir", type=Path, required=True)
    parser.add_argument("--handler", required=True)
    parser.add_argument("--initializer")
    parser.add_argument("--kind", choices=["event", "wsgi", "http"], default="event")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    kind: Kind = args.kind
    instance = Instance(args.code_dir, args.handler, kind, args.initializer)
    server = make_server("127.0.0.1", args.port, create_worker_app(instance), threaded=True)
    # The parent reads this line to learn the port.
    sys.stdout.write(f"READY {server.server_port}\n")
    sys.stdout.flush()
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()


if __name__ == "__main__":
    main()
