"""``barrage serve``: one function of an app, as a platform's container runs it.

The same plan as the image's entrypoint (``functions.entrypoint``): functions-framework's ASGI
app for Knative, the custom-container server for Function Compute, both under ``functions.serve``.
"""

from __future__ import annotations

import os
import sys

import click

from functions.entrypoint import EntrypointError, plan

BARRAGE_APP = "functions.barrage_app"


@click.command()
@click.option("--workload-class", "workload_class", type=click.Choice(["fc", "knative"]), required=True,
              help="fc: Function Compute custom container (x-fc-* contract, /invoke, /initialize); "
                   "knative: functions-framework's ASGI app.")
@click.option("--app", "app_spec", default=BARRAGE_APP, show_default=True,
              help="The app: a module holding an App as `app`, or module:attribute.")
@click.option("--function", "--role", "function", default="homepage", show_default=True,
              help="The function to serve (barrage: homepage or processor).")
@click.option("--host", default="0.0.0.0", show_default=True,
              help="FC needs 0.0.0.0 (binding 127.0.0.1 fails with FunctionNotStarted); tests pass 127.0.0.1.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: FC_SERVER_PORT / CAPort / PORT, else 9000 (fc) or PORT, else 8080 (knative).")
def serve(workload_class: str, app_spec: str, function: str, host: str, port: int | None) -> None:
    """Serve one function in the foreground."""
    environ = {**os.environ, "FUNCTIONS_APP": app_spec, "FUNCTION_TARGET": function,
               "WORKLOAD_CLASS": workload_class, "HOST": host}
    if port is not None:
        environ.update(PORT=str(port), FC_SERVER_PORT=str(port))
    try:
        launch = plan(environ)
    except EntrypointError as exc:
        click.echo(f"barrage serve: {exc}", err=True)
        sys.exit(2)
    os.execve(launch.argv[0], list(launch.argv), {**environ, **launch.env})
