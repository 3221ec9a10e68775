"""The HomePage: the danmaku page and its HTTP API, as one ASGI (Starlette) app every binding serves.

functions-framework's ASGI mode (Knative, local: ``functions.main.homepage``), FC 2.0 WSGI,
FC 3.0 HTTP events and the custom container all hand their requests to the app that
``create_app`` returns.

Endpoints (``GET /openapi.json`` describes them):

* ``GET /`` and ``/static/*``: the page (no build step; CSP ``script-src 'self'``).
* ``POST /api/barrages``, ``GET /api/barrages``: send, and page through results by cursor.
* ``GET /api/stream``: Server-Sent Events. One hub per process reads each room once per tick
  and pushes to all of its viewers (``functions.homepage.sse``); streams are capped at
  ``max_streams`` (``BARRAGE_MAX_STREAMS``, thousands by default) and live at most
  ``stream_lifetime_s`` before the browser reconnects (``retry:``) from its ``Last-Event-ID``.
  ``max_streams`` 0 (FC's built-in runtimes, which cannot stream) makes the page poll
  ``GET /api/barrages`` from the start; beyond the cap the answer is 503 and it polls too.
* ``POST /api/load``, ``GET /api/load/<id>``: server-side load runs (``functions.loadrun``).
* ``GET /healthz``.

Modules: ``app`` (routes), ``sse`` (hub and streams), ``openapi`` (the document), ``body``
(request limits), ``http`` (JSON errors, headers, CORS), ``static``, ``blocking`` (the bounded
pool for blocking adapters), ``publishing`` (the awaitable publisher).
"""

from functions.homepage.app import STATIC_DIR, HomePageOptions, create_app, load_view

__all__ = ["STATIC_DIR", "HomePageOptions", "create_app", "load_view"]
