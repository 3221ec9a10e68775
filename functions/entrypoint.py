"""The container's entrypoint for any app: ``python -m functions.entrypoint``.

``FUNCTIONS_APP`` names the app (``module`` or ``module:attribute``) and ``FUNCTION_TARGET`` the
function to serve (an app may accept other names for it, e.g. barrage's seed ``ROLE``, through
``App(aliases=...)`` and ``App(target_env=...)``). ``WORKLOAD_CLASS`` picks the server:

- ``knative`` (default): functions-framework ``--asgi`` (uvicorn workers under gunicorn) on
  ``$PORT``, default 8080;
- ``fc``: the Function Compute custom-container server (``x-fc-*`` contract, ``/invoke``,
  ``/initialize``) under uvicorn, on ``FC_SERVER_PORT`` / ``CAPort`` / ``PORT``, default 9000.

Workers default to the CPU count (``WORKERS`` overrides). ``HOST`` defaults to 0.0.0.0 (FC fails
with FunctionNotStarted on 127.0.0.1). The server is this process, so it is PID 1 and gets
SIGTERM directly: functions-framework replaces it (exec); uvicorn runs in it, with the command
line ``python -m uvicorn`` would be given, because the app is already imported here (checking
the function's name loaded it) and a second interpreter would import it all again on FC's cold
start. A bad value exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from functions.serve import ServeError, ServerOptions, uvicorn_argv
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
        argv = (python, "-m", "functions_framework", "--asgi", "--source", SOURCE_FILE, "--target", name,
                "--host", host, "--port", str(port))
    else:
        port = _port(environ, ("FC_SERVER_PORT", "CAPort", "PORT"), FC_PORT)
        argv = tuple(uvicorn_argv(python, host, port, options))
    return Launch(name, workload_class, host, port, argv, env)


def main(environ: Mapping[str, str] | None = None) -> int:
    source = os.environ if environ is None else environ
    try:
        launch = plan(source)
    except EntrypointError as exc:
        print(f"functions entrypoint: {exc}", file=sys.stderr)
        return 2
    print(f"{launch.function} ({launch.workload_class}) on {launch.host}:{launch.port}", flush=True)
    if launch.argv[1:3] == ("-m", "uvicorn"):
        return run_uvicorn(launch, source)
    os.execve(launch.argv[0], list(launch.argv), {**source, **launch.env})
    return 0  # not reached: execve replaces the process


def run_uvicorn(launch: Launch, environ: Mapping[str, str]) -> int:
    """``python -m uvicorn <launch.argv[3:]>`` in this process, in the environment exec would give it."""
    os.environ.update({**environ, **launch.env})  # container_factory (and spawned workers) read them
    from uvicorn.main import main as uvicorn_main

    try:
        uvicorn_main.main(args=list(launch.argv[3:]), prog_name="uvicorn")
    except SystemExit as exc:  # click ends every run this way; the code is uvicorn's
        return exc.code if isinstance(exc.code, int) else 0 if exc.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
