"""The container's entrypoint: ``python -m functions.entrypoint``.

One image serves every role. ``ROLE`` picks the app (``homepage``; ``processor`` or the seed's
``manager``), ``WORKLOAD_CLASS`` the server:

- ``knative`` (default): functions-framework on ``$PORT``, default 8080 (the HomePage in its
  ASGI mode, ``--asgi``: uvicorn workers under gunicorn; the processor in its Flask mode);
- ``fc``: the Function Compute custom-container server (``x-fc-*`` contract, ``/invoke``) on
  ``FC_SERVER_PORT`` / ``CAPort`` / ``PORT``, default 9000.

``HOST`` defaults to 0.0.0.0 (FC fails with FunctionNotStarted on 127.0.0.1); tests set
127.0.0.1. The server replaces this process (exec), so it is PID 1 and gets SIGTERM directly.
A bad value exits with code 2 and one line on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROLES = {"homepage": "homepage", "processor": "processor", "manager": "processor"}
WORKLOAD_CLASSES = ("knative", "fc")
FF_TARGETS = {"homepage": "homepage", "processor": "process"}
KNATIVE_PORT = 8080
FUNCTIONS_SOURCE = Path(__file__).resolve().parent / "main.py"


class EntrypointError(ValueError):
    """A setting the entrypoint cannot use; the message is one line."""


@dataclass(frozen=True)
class Launch:
    role: str
    workload_class: str
    host: str
    port: int
    argv: tuple[str, ...]


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
    """What to exec for this environment (pure, so tests can check it without starting anything)."""
    raw_role = environ.get("ROLE", "homepage").strip().lower() or "homepage"
    if raw_role not in ROLES:
        raise EntrypointError(f"ROLE must be one of {', '.join(sorted(ROLES))}, got {raw_role!r}")
    role = ROLES[raw_role]
    workload_class = environ.get("WORKLOAD_CLASS", "knative").strip().lower() or "knative"
    if workload_class not in WORKLOAD_CLASSES:
        raise EntrypointError(f"WORKLOAD_CLASS must be one of {', '.join(WORKLOAD_CLASSES)}, got {workload_class!r}")
    host = environ.get("HOST", "").strip() or "0.0.0.0"
    argv: tuple[str, ...]
    if workload_class == "knative":
        port = _port(environ, ("PORT",), KNATIVE_PORT)
        # The HomePage is an ASGI app (functions-framework's ASGI mode, uvicorn on uvloop/httptools).
        asgi = ("--asgi",) if role == "homepage" else ()
        argv = (python, "-m", "functions_framework", *asgi, "--source", str(FUNCTIONS_SOURCE),
                "--target", FF_TARGETS[role], "--host", host, "--port", str(port))
    else:
        from functions.fc_container import DEFAULT_PORT

        port = _port(environ, ("FC_SERVER_PORT", "CAPort", "PORT"), DEFAULT_PORT)
        threads = _port(environ, ("THREADS",), 8)  # same bounds check suits a thread count
        # gunicorn's "module:factory()" form: the app is built in the worker, from ROLE.
        argv = (python, "-m", "gunicorn", "--bind", f"{host}:{port}", "--workers", "1", "--threads", str(threads),
                "--worker-class", "gthread", "--timeout", "0", "--log-level", "warning",
                "functions.entrypoint:fc_application()")
    return Launch(role, workload_class, host, port, argv)


WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def fc_application() -> WsgiApp:
    """The FC custom-container app for ``$ROLE``, plus ``GET /healthz`` for probes.

    FC itself never sends ``/healthz`` without ``x-fc-control-path``; answering it here gives the
    processor (an event function, no HTTP routes) the same probe path as the HomePage.
    """
    from functions.fc_container import ContainerApp

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    role = ROLES[os.environ.get("ROLE", "homepage").strip().lower() or "homepage"]
    inner = ContainerApp(role)
    if role == "homepage":
        return inner  # the HomePage app has its own /healthz, reached as an HTTP invocation

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if (environ.get("PATH_INFO") == "/healthz" and environ.get("REQUEST_METHOD") in ("GET", "HEAD")
                and "HTTP_X_FC_CONTROL_PATH" not in environ):
            body = json.dumps({"status": "ok"}).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        return inner(environ, start_response)

    return app


def main(environ: Mapping[str, str] | None = None) -> int:
    try:
        launch = plan(os.environ if environ is None else environ)
    except EntrypointError as exc:
        print(f"barrage entrypoint: {exc}", file=sys.stderr)
        return 2
    print(f"barrage {launch.role} ({launch.workload_class}) on {launch.host}:{launch.port}", flush=True)
    os.execv(launch.argv[0], list(launch.argv))
    return 0  # not reached: execv replaces the process


if __name__ == "__main__":
    sys.exit(main())
