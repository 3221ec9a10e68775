"""The container's entrypoint for any app: ``python -m functions.entrypoint``.

``FUNCTIONS_APP`` names the app (``module`` or ``module:attribute``) and ``FUNCTION_TARGET`` the
function to serve (an app may accept other names for it, e.g. barrage's seed ``ROLE``, through
``App(aliases=...)`` and ``App(target_env=...)``). ``WORKLOAD_CLASS`` picks the server:

- ``knative`` (default): functions-framework's ASGI app (what ``functions-framework --asgi``
  serves) on ``$PORT``, default 8080;
- ``fc``: the Function Compute custom-container server (``x-fc-*`` contract, ``/invoke``,
  ``/initialize``) on ``FC_SERVER_PORT`` / ``CAPort`` / ``PORT``, default 9000.

Both run under ``functions.serve``: uvicorn with its workers (the CPU count; ``WORKERS``
overrides), a connection cap and deadlines for reading requests (``SERVER_*``, checked here).
``HOST`` defaults to 0.0.0.0 (FC fails with FunctionNotStarted on 127.0.0.1). The server runs in
this process, with the command line ``python -m functions.serve`` would be given, so it is PID 1
and gets SIGTERM directly, and the app, already imported here (checking the function's name
loaded it), is not imported again by a second interpreter on FC's cold start. A bad value exits
with code 2 and one line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from functions.serve import ServeError, ServerOptions, container_argv, functions_framework_argv
from functions.targets import APP_ENV, SOURCE_FILE, AppNotFound, load_app

WORKLOAD_CLASSES = ("knative", "fc")
KNATIVE_PORT = 8080
FC_PORT = 9000


class EntrypointError(ValueError):
    """A setting the entrypoint cannot use; the message is one line."""


@dataclass(frozen=True)
class Launch:
    function: str
    workload_class: str
    host: str
    port: int
    argv: tuple[str, ...]
    env: Mapping[str, str]


def _port(environ: Mapping[str, str], names: Sequence[str], default: int) -> int:
    for name in names:
        raw = environ.get(name, "").strip()
        if not raw:
            continue
        if not raw.isdigit() or not 1 <= int(raw) <= 65535:
            raise EntrypointError(f"{name} must be a port number (1-65535), got {raw!r}")
        return int(raw)
    return default


def plan(environ: Mapping[str, str], python: str = sys.executable) -> Launch:
    """What to exec for this environment (no server is started, so tests can check it)."""
    spec = environ.get(APP_ENV, "").strip()
    if not spec:
        raise EntrypointError(f"{APP_ENV} must name the app to serve (module or module:attribute)")
    try:
        app = load_app(spec)
    except AppNotFound as exc:
        raise EntrypointError(str(exc)) from None
    requested = environ.get("FUNCTION_TARGET", "").strip()
    if not requested and app.target_env:
        requested = environ.get(app.target_env, "").strip().lower()
    name = app.aliases.get(requested, requested)
    if name not in app.functions:
        source = "FUNCTION_TARGET" + (f" (or {app.target_env})" if app.target_env else "")
        raise EntrypointError(f"{source} must be one of {', '.join(sorted(app.functions))}, got {requested!r}")
    workload_class = environ.get("WORKLOAD_CLASS", "knative").strip().lower() or "knative"
    if workload_class not in WORKLOAD_CLASSES:
        raise EntrypointError(f"WORKLOAD_CLASS must be one of {', '.join(WORKLOAD_CLASSES)}, got {workload_class!r}")
    host = environ.get("HOST", "").strip() or "0.0.0.0"
    try:
        options = ServerOptions.from_environ(environ)
    except ServeError as exc:
        raise EntrypointError(str(exc)) from None
    argv: tuple[str, ...]
    env = {APP_ENV: spec, "FUNCTION_TARGET": name, "WORKERS": str(options.workers)}
    if workload_class == "knative":
        port = _port(environ, ("PORT",), KNATIVE_PORT)
        argv = tuple(functions_framework_argv(python, SOURCE_FILE, name, host, port))
    else:
        port = _port(environ, ("FC_SERVER_PORT", "CAPort", "PORT"), FC_PORT)
        argv = tuple(container_argv(python, host, port))
    return Launch(name, workload_class, host, port, argv, env)


def main(environ: Mapping[str, str] | None = None) -> int:
    source = os.environ if environ is None else environ
    try:
        launch = plan(source)
    except EntrypointError as exc:
        print(f"functions entrypoint: {exc}", file=sys.stderr)
        return 2
    print(f"{launch.function} ({launch.workload_class}) on {launch.host}:{launch.port}", flush=True)
    return serve_here(launch, source)


def serve_here(launch: Launch, environ: Mapping[str, str]) -> int:
    """``python -m functions.serve <launch.argv[3:]>`` in this process, in the environment exec would give it."""
    os.environ.update({**environ, **launch.env})  # the factories (and spawned workers) read them
    from functions.serve import main as serve_main

    return serve_main(list(launch.argv[3:]))


if __name__ == "__main__":
    sys.exit(main())
