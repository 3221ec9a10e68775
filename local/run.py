"""``barrage run APP FUNCTION``: one function of any app as functions-framework's ASGI app, locally.

``APP`` is the module that holds the ``App`` (``module`` or ``module:attribute``), imported from the
current directory as functions-framework imports ``--source``. An HTTP function serves its ASGI
app; an event function takes CloudEvents over HTTP at ``/`` (binary, structured or batch), as a
Knative sink does. The server is the one Knative runs (``functions.serve``: its limits, ``SERVER_*``).
"""

from __future__ import annotations

import os
import sys

import click

from functions.serve import functions_framework_argv
from functions.targets import APP_ENV, SOURCE_FILE, AppNotFound, load_app


@click.command()
@click.argument("app_spec", metavar="APP")
@click.argument("function")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(1, 65535), default=8080, show_default=True)
def run(app_spec: str, function: str, host: str, port: int) -> None:
    """Serve FUNCTION of APP locally as functions-framework's ASGI app."""
    try:
        app = load_app(app_spec)
        app.function(function)
    except (AppNotFound, KeyError) as exc:
        click.echo(f"barrage run: {exc.args[0] if exc.args else exc}", err=True)
        sys.exit(2)
    env = {**os.environ, APP_ENV: app_spec, "WORKERS": os.environ.get("WORKERS", "1")}
    argv = functions_framework_argv(sys.executable, SOURCE_FILE, function, host, port)
    click.echo(f"{app.name}.{function} on http://{host}:{port}/", err=True)
    os.execve(sys.executable, argv, env)
