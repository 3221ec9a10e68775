"""The HTTP server of every process of this layer: uvicorn, on uvloop and httptools when installed.

    python -m functions.serve functions-framework --source FILE --target NAME [--host H] [--port P]
    python -m functions.serve container [--host H] [--port P]

``functions-framework`` serves functions-framework's own ASGI app for ``--target`` in ``--source``
(``functions_framework.aio.create_asgi_app``: the app ``functions-framework --asgi`` serves, its
routes and middleware unchanged); Knative, ``barrage up``, ``barrage run`` and the image's
``WORKLOAD_CLASS=knative`` run it. ``container`` serves the FC custom-container app of
``$FUNCTION_TARGET`` in ``$FUNCTIONS_APP`` (``functions.bindings.custom_container``) on CAPort.

Why not functions-framework's own CLI: its ``--asgi`` runs uvicorn workers under gunicorn with
options of its own (gunicorn's 2 s keep-alive, no connection cap) and takes none from outside
(it ignores ``GUNICORN_CMD_ARGS``), and uvicorn has no deadline for reading a request. Here both
servers get the same settings from the environment (``ServerOptions``) and uvicorn's HTTP protocol
with the deadlines of ``functions.http_limits``:

- ``WORKERS``: worker processes (default: the CPU count);
- ``SERVER_MAX_CONNECTIONS``: connections per worker (default 10,000; beyond, 503 at once);
- ``SERVER_HEADER_TIMEOUT_S`` (10), ``SERVER_BODY_TIMEOUT_S`` (30), ``SERVER_MAX_HEADER_BYTES`` (65,536):
  a request's headers within that time (else 408, or the connection closes), no pause of that long
  in its body (else 408 and the app sees ``http.disconnect``), headers no longer than that (431);
- ``SERVER_BODY_MIN_RATE`` (240 bytes a second; 0: none): a body that has been arriving for
  ``SERVER_BODY_TIMEOUT_S`` must have come at least that fast on average (else 408, as above);
- ``SERVER_KEEPALIVE_S`` (5), ``SERVER_BACKLOG`` (2,048), ``SERVER_GRACEFUL_TIMEOUT_S`` (30: on
  SIGTERM, open requests and streams get that long before they are cancelled);
- ``SERVER_HTTP``: the request parser, ``auto`` (httptools when installed, else h11), ``httptools``
  or ``h11``.

A bad value exits with code 2 and one line naming the variable.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from functions.http_limits import ReadLimits

FUNCTIONS_FRAMEWORK = "functions-framework"
CONTAINER = "container"
_NUMBER = re.compile(r"\d+(\.\d+)?")


class ServeError(ValueError):
    """A serving setting that cannot be used; the message is one line naming the variable."""


def _positive(environ: Mapping[str, str], name: str, default: int, minimum: int = 1) -> int:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not raw.isascii() or not raw.isdigit() or int(raw) < minimum:
        raise ServeError(f"{name} must be a whole number of at least {minimum:,}, got {raw!r}")
    return int(raw)


def _seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name, "").strip()
    if not raw:
        return default
    if not _NUMBER.fullmatch(raw) or not 0 < float(raw) <= 86_400 or not math.isfinite(float(raw)):
        raise ServeError(f"{name} must be a number of seconds above 0 (at most 86400), got {raw!r}")
    return float(raw)


def _choice(environ: Mapping[str, str], name: str, choices: Sequence[str]) -> str:
    raw = environ.get(name, "").strip()
    if not raw:
        return choices[0]
    if raw.lower() not in choices:
        raise ServeError(f"{name} must be one of {', '.join(choices)}, got {raw!r}")
    return raw.lower()


@dataclass(frozen=True)
class ServerOptions:
    workers: int
    limit_concurrency: int  # connections + running tasks per worker; beyond, 503 at once
    timeout_keep_alive: int  # seconds an idle keep-alive connection is kept
    backlog: int
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 65_536
    body_min_rate: int = 240
    graceful_timeout_s: float = 30.0
    http: str = "auto"  # the request parser: httptools when installed, else h11

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> ServerOptions:
        return cls(
            workers=_positive(environ, "WORKERS", os.cpu_count() or 1),
            limit_concurrency=_positive(environ, "SERVER_MAX_CONNECTIONS", 10_000),
            timeout_keep_alive=_positive(environ, "SERVER_KEEPALIVE_S", 5),
            backlog=_positive(environ, "SERVER_BACKLOG", 2048),
            header_timeout_s=_seconds(environ, "SERVER_HEADER_TIMEOUT_S", 10.0),
            body_timeout_s=_seconds(environ, "SERVER_BODY_TIMEOUT_S", 30.0),
            max_header_bytes=_positive(environ, "SERVER_MAX_HEADER_BYTES", 65_536, minimum=1024),
            body_min_rate=_positive(environ, "SERVER_BODY_MIN_RATE", 240, minimum=0),
            graceful_timeout_s=_seconds(environ, "SERVER_GRACEFUL_TIMEOUT_S", 30.0),
            http=_choice(environ, "SERVER_HTTP", ("auto", "httptools", "h11")),
        )

    @property
    def read_limits(self) -> ReadLimits:
        from functions.http_limits import ReadLimits

        return ReadLimits(self.header_timeout_s, self.body_timeout_s, self.max_header_bytes, self.body_min_rate)


def functions_framework_argv(python: str, source: str | Path, target: str, host: str, port: int) -> list[str]:
    """The command that serves functions-framework's ASGI app for ``target`` (what Knative and local runs use)."""
    return [python, "-m", "functions.serve", FUNCTIONS_FRAMEWORK, "--source", str(source), "--target", target,
            "--host", host, "--port", str(port)]


def container_argv(python: str, host: str, port: int) -> list[str]:
    """The command that serves ``$FUNCTION_TARGET`` of ``$FUNCTIONS_APP`` as FC's custom container expects."""
    return [python, "-m", "functions.serve", CONTAINER, "--host", host, "--port", str(port)]


def functions_framework_app() -> Any:
    """uvicorn's factory in each worker: functions-framework's ASGI app, as its CLI's ``--asgi`` builds it
    (``FUNCTION_TARGET``, ``FUNCTION_SOURCE``, ``FUNCTION_SIGNATURE_TYPE`` from the environment)."""
    from functions_framework.aio import create_asgi_app

    return create_asgi_app()  # type: ignore[no-untyped-call]


def container_factory() -> object:
    """uvicorn's factory: the custom-container app of ``$FUNCTION_TARGET`` in ``$FUNCTIONS_APP``."""
    from functions.bindings.custom_container import container_app
    from functions.targets import load_app

    app = load_app(os.environ["FUNCTIONS_APP"])
    return container_app(app.function(os.environ["FUNCTION_TARGET"]))


def config_for(app: str, host: str, port: int, options: ServerOptions, *, lifespan: str = "auto") -> Any:
    """The uvicorn configuration for the factory named ``app`` (``module:function``)."""
    from functions.http_limits import LimitedConfig, h11_incomplete_limit, protocol_class

    return LimitedConfig(
        app, factory=True, host=host, port=port, workers=options.workers, http=protocol_class(options.http),
        limit_concurrency=options.limit_concurrency, timeout_keep_alive=options.timeout_keep_alive,
        backlog=options.backlog, timeout_graceful_shutdown=options.graceful_timeout_s,
        h11_max_incomplete_event_size=h11_incomplete_limit(options.read_limits), read_limits=options.read_limits,
        lifespan=lifespan, log_level="warning", access_log=False)


def run(config: Any) -> int:
    """Serve until a signal ends it: in this process for one worker, else under uvicorn's supervisor."""
    import uvicorn
    from uvicorn.supervisors import Multiprocess

    server = uvicorn.Server(config)
    if config.workers > 1:
        Multiprocess(config, sockets=[config.bind_socket()]).run()
        return 0
    server.run()
    return 0 if server.started else 3  # uvicorn's own exit code for a failed start


def _arguments(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m functions.serve", description=__doc__.split("\n\n")[0])
    kinds = parser.add_subparsers(dest="kind", required=True)
    ff = kinds.add_parser(FUNCTIONS_FRAMEWORK, help="functions-framework's ASGI app for a target")
    ff.add_argument("--source", required=True)
    ff.add_argument("--target", required=True)
    ff.add_argument("--signature-type", default="http", choices=("http", "event", "cloudevent", "typed"))
    container = kinds.add_parser(CONTAINER, help="the FC custom-container app of $FUNCTION_TARGET in $FUNCTIONS_APP")
    for sub in (ff, container):
        sub.add_argument("--host", default="0.0.0.0")
        sub.add_argument("--port", type=int, default=None)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, environ: Mapping[str, str] | None = None) -> int:
    args = _arguments(sys.argv[1:] if argv is None else argv)
    source_env = os.environ if environ is None else environ
    try:
        options = ServerOptions.from_environ(source_env)
    except ServeError as exc:
        print(f"functions.serve: {exc}", file=sys.stderr)
        return 2
    if args.kind == FUNCTIONS_FRAMEWORK:
        if not Path(args.source).is_file():
            print(f"functions.serve: --source {args.source!r} is not a file", file=sys.stderr)
            return 2
        # The factory runs in each worker and reads these, as functions-framework's CLI does.
        os.environ.update(FUNCTION_TARGET=args.target, FUNCTION_SOURCE=str(Path(args.source).resolve()),
                          FUNCTION_SIGNATURE_TYPE=args.signature_type)
        config = config_for("functions.serve:functions_framework_app", args.host, args.port or 8080, options)
    else:
        missing = [name for name in ("FUNCTIONS_APP", "FUNCTION_TARGET") if not source_env.get(name, "").strip()]
        if missing:
            print(f"functions.serve: set {' and '.join(missing)} to name the function to serve", file=sys.stderr)
            return 2
        config = config_for("functions.serve:container_factory", args.host, args.port or 9000, options,
                            lifespan="on")
    return run(config)


if __name__ == "__main__":
    sys.exit(main())
