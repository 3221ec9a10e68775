"""The ``barrage`` command line."""

from __future__ import annotations

import importlib
import os
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
    "send": "local.send:send",
    "render": "local.render:render",
    "run": "local.run:run",
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
@click.option("--bus", type=click.Choice(["kafka", "memory"]), default="kafka", show_default=True,
              help="kafka: broker, dispatcher and processor; memory: the HomePage processes in-process.")
@click.option("--store", type=click.Choice(["sqlite", "tablestore"]), default="sqlite", show_default=True,
              help="tablestore: start the Tablestore emulator and use the real SDK.")
@click.option("--processor-port", default=8081, show_default=True, type=click.IntRange(1, 65535))
@click.option("--processors", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Processor instances (worker processes).")
@click.option("--broker-port", default=9092, show_default=True, type=click.IntRange(1, 65535))
@click.option("--tablestore-port", default=8089, show_default=True, type=click.IntRange(1, 65535))
@click.option("--fc", "fc_port", type=click.IntRange(1, 65535), default=None, help="Also serve the local FC API here.")
@click.option("--batch-size", default=0, show_default=True, type=click.IntRange(0, 10_000),
              help="Dispatcher batch delivery (0: one event per request, as KafkaSource).")
@click.option("--container-concurrency", type=click.IntRange(0, 1000), default=None,
              help="Processor containerConcurrency (default: from the Knative Service manifest).")
@click.option("--app", "app_spec", default=None,
              help="Run another app from its declaration (a module with DEPLOYMENT): its functions from --port "
                   "on, a dispatcher per Kafka trigger, the broker.")
def up(host: str, port: int, data_dir: Path, bus: str, store: str, processor_port: int, processors: int,
       broker_port: int, tablestore_port: int, fc_port: int | None, batch_size: int,
       container_concurrency: int | None, app_spec: str | None) -> None:
    """Run the whole service locally: broker, dispatcher, processor, store and HomePage.

    Ctrl-C, SIGTERM and closing the terminal (SIGHUP) stop it all within 3 s.
    """
    from local.stack import StackOptions, prepare_stack
    from local.supervisor import StackError, StackInterrupted

    options = StackOptions(
        host=host, port=port, data_dir=data_dir, bus=bus, store=store, processor_port=processor_port,
        processors=processors, broker_port=broker_port, tablestore_port=tablestore_port, fc_port=fc_port,
        batch_size=batch_size, kafka_server=os.environ.get("KAFKA_SERVER") or None,
        container_concurrency=container_concurrency,
    )
    try:
        if app_spec is None:
            supervisor, urls = prepare_stack(options, lambda line: _say(f"barrage up: {line}"))
        else:
            supervisor, urls = _prepare_app(app_spec, options)
    except StackError as exc:
        _say(f"barrage up: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:  # Ctrl-C while an earlier stack was being stopped; nothing started
        sys.exit(130)

    def on_signal(signum: int, _frame: object) -> None:
        supervisor.request_stop(signum)

    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Under nohup the hang-up is meant to be ignored; Ctrl-C is handled even in the background.
        if number == signal.SIGHUP and signal.getsignal(number) is signal.SIG_IGN:
            continue
        signal.signal(number, on_signal)
    status = 0
    try:
        supervisor.start()
        for name, url in urls.items():
            _say(f"{name:>10}: {url}")
        _say("Ctrl-C stops everything.")
        supervisor.watch()
    except StackInterrupted:
        pass
    except StackError as exc:
        _say(f"barrage up: {exc}", err=True)
        status = 1
    finally:
        report = supervisor.stop()
        if report.stopped:  # a stack refused before it started (a busy port) stays one line
            _say(report.summary())
    sys.exit(status)


def _prepare_app(app_spec: str, options: Any) -> tuple[Any, dict[str, str]]:
    from local.app_stack import AppStackError, AppStackOptions, app_stack_specs, load_deployment
    from local.stack import prepare_supervisor
    from local.supervisor import StackError

    try:
        deployment = load_deployment(app_spec)
        specs, urls = app_stack_specs(deployment, AppStackOptions(
            port=options.port, broker_port=options.broker_port, data_dir=options.data_dir,
            kafka_server=options.kafka_server))
    except AppStackError as exc:
        raise StackError(str(exc)) from None
    return prepare_supervisor(specs, options.data_dir, lambda line: _say(f"barrage up: {line}")), urls


def _say(line: str, err: bool = False) -> None:
    """Print one line; a closed terminal (the hang-up that stopped us) or pipe is no error."""
    try:
        click.echo(line, err=err)
    except OSError:
        # Later writes (and the interpreter's final flush) would fail the same way.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, (sys.stderr if err else sys.stdout).fileno())


if __name__ == "__main__":
    main()
