"""functions-framework targets (Knative and local).

Run one alone::

    functions-framework --asgi --source functions/main.py --target homepage --port 8080
    functions-framework --source functions/main.py --target process --port 8081

The HomePage is an ASGI app and needs ``--asgi`` (uvicorn; uvloop and httptools when
installed); the processor is still a Flask-mode target.

Services are built from the process environment on first use, once per process. Each
target imports only its own side (a processor pod never loads the HomePage, nor the reverse).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from functions.config import Settings

if TYPE_CHECKING:
    from flask import Request
    from starlette.applications import Starlette
    from starlette.requests import Request as AsgiRequest

    from functions.concurrency import ConcurrencyLimiter
    from functions.ff_asgi import AppResponse
    from functions.wiring import Services

FUNCTIONS_SOURCE_FILE = __file__
_lock = threading.Lock()
_services: Services | None = None
_homepage: Starlette | None = None
_homepage_response: AppResponse | None = None
_gate: ConcurrencyLimiter | None = None


def services() -> Services:
    global _services
    built = _services
    if built is None:  # built once; later calls take no lock
        with _lock:
            if _services is None:
                from functions.wiring import build_services

                _services = build_services(Settings.from_environ(os.environ))
            built = _services
    return built


def homepage_app() -> Starlette:
    global _homepage
    app = _homepage
    if app is None:
        from functions.homepage import create_app

        made = create_app(services())
        with _lock:
            _homepage = app = _homepage or made
    return app


def processor_gate() -> ConcurrencyLimiter:
    """containerConcurrency for this process, as Knative's queue-proxy enforces it."""
    global _gate
    gate = _gate
    if gate is None:
        from functions.concurrency import ConcurrencyLimiter

        made = ConcurrencyLimiter(services().settings.container_concurrency)
        with _lock:
            _gate = gate = _gate or made
    return gate


async def homepage(request: AsgiRequest) -> AppResponse:
    """The HomePage (page, API, event streams) under ``functions-framework --asgi``.

    The answer is the HomePage app itself, which functions-framework then runs on this
    request's scope, receive and send (``functions.ff_asgi``).
    """
    global _homepage_response
    response = _homepage_response
    if response is None:
        from functions.ff_asgi import AppResponse

        response = _homepage_response = AppResponse(homepage_app())
    return response


def reset() -> None:
    """Forget the built services (tests, and a binding that rebuilds after a config change)."""
    global _services, _homepage, _homepage_response, _gate
    with _lock:
        if _services is not None:
            _services.close()
        _services = None
        _homepage = None
        _homepage_response = None
        _gate = None


def process(request: Request) -> Any:
    """The processor: CloudEvents in (binary, structured or batch), 2xx / 400 / 503 out."""
    from functions.processor_http import receive

    return receive(services(), processor_gate(), request)
