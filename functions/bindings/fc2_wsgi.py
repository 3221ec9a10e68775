"""FC 2.0 HTTP functions: the runtime calls ``handler(environ, start_response)`` (WSGI, PLATFORM.md §1).

The ASGI app sees the request the environ describes; the FC context the runtime puts in the
environ (``fc.context``) reaches the app as ``scope["fc.context"]``. FC 2.0 answers with the
whole response, so it is collected before ``start_response`` is called.
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, ClassVar
from urllib.parse import quote

from functions.asgi import HttpRequest, HttpResponse


def _body(environ: Mapping[str, Any]) -> bytes:
    stream = environ.get("wsgi.input")
    if stream is None:
        return b""
    length = str(environ.get("CONTENT_LENGTH") or "").strip()
    return bytes(stream.read(int(length))) if length.isdigit() else bytes(stream.read())


def _headers(environ: Mapping[str, Any]) -> list[tuple[str, str]]:
    headers = [(key[5:].replace("_", "-").lower(), str(value)) for key, value in environ.items()
               if key.startswith("HTTP_")]
    for key, name in (("CONTENT_TYPE", "content-type"), ("CONTENT_LENGTH", "content-length")):
        if environ.get(key):
            headers.append((name, str(environ[key])))
    return headers


class Fc2Wsgi:
    name: ClassVar[str] = "fc2-wsgi"

    @classmethod
    def infer(cls, event: Any, context: Any) -> bool:
        return isinstance(event, Mapping) and "wsgi.input" in event and "REQUEST_METHOD" in event and callable(context)

    @classmethod
    def request(cls, event: Any, context: Any) -> HttpRequest:
        # WSGI carries the path as the latin-1 characters of its bytes; ASGI wants the UTF-8 text.
        path = str(event.get("PATH_INFO") or "/").encode("latin-1", "replace").decode("utf-8", "replace")
        # fc.request_uri holds the path as sent (still URL-encoded), with the query.
        raw_uri = str(event.get("fc.request_uri") or event.get("RAW_URI") or quote(path))
        port = str(event.get("SERVER_PORT") or "9000")
        remote = str(event.get("REMOTE_ADDR") or "")
        return HttpRequest(
            method=str(event["REQUEST_METHOD"]).upper(),
            path=path,
            raw_path=raw_uri.split("?", 1)[0],
            query_string=str(event.get("QUERY_STRING") or ""),
            headers=_headers(event),
            body=_body(event),
            client=(remote, 0) if remote else None,
            server=(str(event.get("SERVER_NAME") or "FCRUNTIME"), int(port) if port.isdigit() else 9000),
            scheme=str(event.get("wsgi.url_scheme") or "http"),
            extensions={"fc.context": event.get("fc.context")},
        )

    @classmethod
    def respond(cls, response: HttpResponse, event: Any, context: Any) -> Any:
        try:
            reason = HTTPStatus(response.status).phrase
        except ValueError:
            reason = ""
        headers = [(k, v) for k, v in response.headers if k.lower() != "content-length"]
        headers.append(("Content-Length", str(len(response.body))))
        context(f"{response.status} {reason}".strip(), headers)
        return [response.body]
