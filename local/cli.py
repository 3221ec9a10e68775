"""The ``barrage`` command line."""

from __future__ import annotations

import importlib
import signal
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

import click

# Subcommands live beside what they run and load only when used, so --help stays fast.
LAZY_COMMANDS: dict[str, str] = {
    "broker": "local.broker:broker",
    "dispatch": "local.kafkasource.run:dispatch",
    "serve": "local.serve:serve",
    "fc": "local.fc.cli:fc",
    "invoke": "local.fc.cli:invoke",
    "build": "local.build:build",
}


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: dict[str, str] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = lazy or {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name in self.lazy:
            module_name, _, attribute = self.lazy[name].partition(":")
            command = getattr(importlib.import_module(module_name), attribute)
            assert isinstance(command, click.Command)
            return command
        return super().get_command(ctx, name)


@click.group(cls=LazyGroup, lazy=LAZY_COMMANDS)
def main() -> None:
    """barrage: a live bullet-comment service for Function Compute and Knative."""


@main.group(cls=LazyGroup, lazy={"tablestore": "local.tablestore.cli:emulate_tablestore"})
def emulate() -> None:
    """Local emulators of cloud services."""


@main.command()
def version() -> None:
    """Print the installed version."""
    click.echo(f"barrage {metadata.version('barrage')}")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address the HomePage listens on.")
@click.option("--port", default=8080, show_default=True, type=click.IntRange(1, 65535), help="HomePage port.")
@click.option("--data-dir", default=".barrage", show_default=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--bus", type=click.Choice(["memory"]), default="memory", show_default=True,
              help="memory: process in the HomePage process.")
def up(host: str, port: int, data_dir: Path, bus: str) -> None:
    """Run the service locally on the embedded defaults."""
    from local.stack import StackOptions, run_stack
    from local.supervisor import StackError

    try:
        supervisor, urls = run_stack(StackOptions(host=host, port=port, data_dir=data_dir, bus=bus))
    except StackError as exc:
        click.echo(f"barrage up: {exc}", err=True)
        sys.exit(2)
    for name, url in urls.items():
        click.echo(f"{name:>10}: {url}")
    click.echo("Ctrl-C stops everything.")

    def _stop(signum: int, _frame: object) -> None:
        supervisor.stop()

    signal.signal(signal.SIGTERM, _stop)
    try:
        supervisor.watch()
    except KeyboardInterrupt:
        pass
    finally:
        supervisor.stop()
        click.echo("stopped")


if __name__ == "__main__":
    main()
