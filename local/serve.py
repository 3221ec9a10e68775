"""``barrage serve``: one role of the service, as a platform's container runs it."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

# Beside this package, not imported: importing functions.main would load Flask for nothing.
FUNCTIONS_SOURCE = Path(__file__).resolve().parent.parent / "functions" / "main.py"
FF_TARGETS = {"homepage": "homepage", "processor": "process"}


@click.command()
@click.option("--workload-class", "workload_class", type=click.Choice(["fc", "knative"]), required=True,
              help="fc: Function Compute custom container (x-fc-* contract, /invoke, /initialize); "
                   "knative: functions-framework.")
@click.option("--role", type=click.Choice(["homepage", "processor"]), default="homepage", show_default=True)
@click.option("--host", default="0.0.0.0", show_default=True,
              help="FC needs 0.0.0.0 (binding 127.0.0.1 fails with FunctionNotStarted); tests pass 127.0.0.1.")
@click.option("--port", type=click.IntRange(1, 65535), default=None,
              help="Default: FC_SERVER_PORT / CAPort / PORT, else 9000 (fc) or PORT, else 8080 (knative).")
def serve(workload_class: str, role: str, host: str, port: int | None) -> None:
    """Serve the HomePage or the processor in the foreground."""
    if workload_class == "fc":
        from functions.fc_container import serve as serve_fc

        serve_fc(role, host=host, port=port)
        return
    chosen = port if port is not None else int(os.environ.get("PORT", "8080"))
    # The HomePage is an ASGI app: functions-framework's ASGI mode serves it.
    asgi = ["--asgi"] if role == "homepage" else []
    argv = [sys.executable, "-m", "functions_framework", *asgi, "--source", str(FUNCTIONS_SOURCE),
            "--target", FF_TARGETS[role], "--host", host, "--port", str(chosen)]
    os.execv(sys.executable, argv)
