"""A functions-framework source for any app: ``--source <this file> --target NAME``.

``FUNCTIONS_APP`` names the app (``package.module`` holding an ``App`` as ``app``, or
``package.module:attribute``); the target is the function's name. ``barrage run`` and the
container's entrypoint serve functions-framework's ASGI app of this file
(``python -m functions.serve functions-framework``; ``functions-framework --asgi`` serves it too,
without the server's limits), so no app needs a file of targets.
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


def import_attribute(spec: str, default: str, what: str) -> tuple[Any, str, Any]:
    """``module`` (its ``default`` attribute) or ``module:attribute``, imported with the current directory
    on the path as functions-framework imports ``--source``: (module, dotted name, the attribute or None).
    ``AppNotFound`` names ``what`` was asked for."""
    module_name, _, attribute = spec.partition(":")
    if not module_name:
        raise AppNotFound(f"{what} must be module or module:attribute, got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # the app's own code
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise AppNotFound(f"{what}: cannot import {module_name!r}: {exc}") from None
    return module, f"{module_name}.{attribute or default}", getattr(module, attribute or default, None)


def load_app(spec: str) -> Any:
    from functions.app import App

    _, name, app = import_attribute(spec, "app", APP_ENV)
    if not isinstance(app, App):
        raise AppNotFound(f"{APP_ENV}: {name} is not a functions.app.App")
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
