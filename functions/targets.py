"""A functions-framework source for any app: ``functions-framework --asgi --source <this file> --target NAME``.

``FUNCTIONS_APP`` names the app (``package.module`` holding an ``App`` as ``app``, or
``package.module:attribute``); the target is the function's name. ``barrage run`` and the
container's entrypoint start functions-framework this way, so no app needs a file of targets.
"""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path
from typing import Any

APP_ENV = "FUNCTIONS_APP"
SOURCE_FILE = str(Path(__file__).resolve())


class AppNotFound(LookupError):
    """``FUNCTIONS_APP`` does not name an importable app; one line."""


def load_app(spec: str) -> Any:
    from functions.app import App

    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppNotFound(f"{APP_ENV} must be module or module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own code, as functions-framework --source allows
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppNotFound(f"{APP_ENV}: cannot import {module_name!r}: {exc}") from None
    app = getattr(module, attribute or "app", None)
    if not isinstance(app, App):
        raise AppNotFound(f"{APP_ENV}: {module_name}.{attribute or 'app'} is not a functions.app.App")
    return app


def __getattr__(name: str) -> Any:
    if name.startswith("__"):
        raise AttributeError(name)
    spec = os.environ.get(APP_ENV, "")
    if not spec:
        raise AttributeError(f"set {APP_ENV} to the app's module to serve its function {name!r}")
    try:
        return load_app(spec).function(name).target
    except KeyError as exc:
        raise AttributeError(str(exc)) from None
