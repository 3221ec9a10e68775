"""Event-loop serving for the servers of this layer (uvicorn on uvloop and httptools when installed).

``run`` serves a function's custom-container app (``functions.bindings.custom_container``) on
CAPort; functions-framework ``--asgi`` serves Knative and local runs with the same uvicorn. The
sizing is shared: workers per process default to the CPU count, and each worker caps its
connections and the time a connection may stay idle, so one client cannot hold them all.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


class ServeError(ValueError):
    """A serving setting that cannot be used; the message is one line naming the variable."""


def _positive(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isdigit() or int(raw) < 1:
        raise ServeError(f"{name} must be a whole number of at least 1, got {raw!r}")
    return int(raw)


@dataclass(frozen=True)
class ServerOptions:
    workers: int
    limit_concurrency: int  # connections + running tasks per worker; beyond, 503 at once
    timeout_keep_alive: int  # seconds an idle keep-alive connection is kept
    backlog: int

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServerOptions:
        return cls(
            workers=_positive(environ, "WORKERS", os.cpu_count() or 1),
            limit_concurrency=_positive(environ, "SERVER_MAX_CONNECTIONS", 10_000),
            timeout_keep_alive=_positive(environ, "SERVER_KEEPALIVE_S", 5),
            backlog=_positive(environ, "SERVER_BACKLOG", 2048),
        )


def uvicorn_argv(python: str, host: str, port: int, options: ServerOptions) -> list[str]:
    """The command that serves ``$FUNCTION_TARGET`` of ``$FUNCTIONS_APP`` as FC's custom container expects."""
    return [python, "-m", "uvicorn", "--factory", "functions.serve:container_factory", "--host", host,
            "--port", str(port), "--workers", str(options.workers),
            "--limit-concurrency", str(options.limit_concurrency),
            "--timeout-keep-alive", str(options.timeout_keep_alive), "--backlog", str(options.backlog),
            "--log-level", "warning", "--no-access-log", "--lifespan", "on"]


def container_factory() -> object:
    """uvicorn's factory: the custom-container app of ``$FUNCTION_TARGET`` in ``$FUNCTIONS_APP``."""
    from functions.bindings.custom_container import container_app
    from functions.targets import load_app

    app = load_app(os.environ["FUNCTIONS_APP"])
    return container_app(app.function(os.environ["FUNCTION_TARGET"]))
