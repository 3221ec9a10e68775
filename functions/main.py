"""functions-framework targets (Knative and local).

Run one alone::

    functions-framework --source functions/main.py --target homepage --port 8080

Services are built from the process environment on first use, once per process.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from flask import Flask, Request, Response

from functions.config import Settings
from functions.homepage import create_app
from functions.processor_http import create_processor_app
from functions.wiring import Services, build_services

FUNCTIONS_SOURCE_FILE = __file__
_lock = threading.Lock()
_services: Services | None = None
_homepage: Flask | None = None
_processor: Flask | None = None


def services() -> Services:
    global _services
    with _lock:
        if _services is None:
            _services = build_services(Settings.from_environ(os.environ))
        return _services


def homepage_app() -> Flask:
    global _homepage
    if _homepage is None:
        built = create_app(services())
        with _lock:
            _homepage = _homepage or built
    return _homepage


def processor_app() -> Flask:
    global _processor
    if _processor is None:
        built = create_processor_app(services())
        with _lock:
            _processor = _processor or built
    return _processor


def homepage(request: Request) -> Any:
    """The HomePage: the page and its HTTP API."""
    return Response.from_app(homepage_app().wsgi_app, request.environ, buffered=False)


def reset() -> None:
    """Forget the built services (tests, and a binding that rebuilds after a config change)."""
    global _services, _homepage, _processor
    with _lock:
        if _services is not None:
            _services.close()
        _services = None
        _homepage = None
        _processor = None


def process(request: Request) -> Any:
    """The processor: CloudEvents in (binary, structured or batch), 2xx / 400 / 503 out."""
    return Response.from_app(processor_app().wsgi_app, request.environ)
