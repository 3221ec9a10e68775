"""functions-framework targets (Knative and local).

Run one alone::

    functions-framework --source functions/main.py --target homepage --port 8080

Services are built from the process environment on first use, once per process. Each
target imports only its own side (a processor pod never loads the HomePage, nor the reverse).
"""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING, Any

from flask import Request, Response

from functions.config import Settings

if TYPE_CHECKING:
    from flask import Flask

    from functions.concurrency import ConcurrencyLimiter
    from functions.wiring import Services

FUNCTIONS_SOURCE_FILE = __file__
_lock = threading.Lock()
_services: Services | None = None
_homepage: Flask | None = None
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


def homepage_app() -> Flask:
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


def homepage(request: Request) -> Any:
    """The HomePage: the page and its HTTP API."""
    return Response.from_app(homepage_app().wsgi_app, request.environ, buffered=False)


def reset() -> None:
    """Forget the built services (tests, and a binding that rebuilds after a config change)."""
    global _services, _homepage, _gate
    with _lock:
        if _services is not None:
            _services.close()
        _services = None
        _homepage = None
        _gate = None


def process(request: Request) -> Any:
    """The processor: CloudEvents in (binary, structured or batch), 2xx / 400 / 503 out."""
    from functions.processor_http import receive

    return receive(services(), processor_gate(), request)
