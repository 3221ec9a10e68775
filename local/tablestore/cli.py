"""``barrage emulate tablestore``: run the Tablestore emulator until Ctrl-C."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("tablestore")
@click.option("--port", type=click.IntRange(0, 65535), default=0, show_default=True, help="0 picks a free port.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (keep it loopback).")
@click.option("--instance", default="barrage", show_default=True, help="Instance name clients must send.")
@click.option("--access-key-id", default="emulator-key", show_default=True)
@click.option("--access-key-secret", default="emulator-secret", show_default=True)
@click.option("--data", "data_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="SQLite file that keeps the data across restarts (default: memory only).")
def emulate_tablestore(
    port: int, host: str, instance: str, access_key_id: str, access_key_secret: str, data_file: Path | None
) -> None:
    """Serve Tablestore's wire protocol for the unmodified SDK."""
    from local.tablestore.server import TablestoreEmulator

    if data_file is not None:
        data_file.parent.mkdir(parents=True, exist_ok=True)
    try:
        emulator = TablestoreEmulator(
            host=host, port=port, instance=instance, access_key_id=access_key_id,
            access_key_secret=access_key_secret, data_file=str(data_file) if data_file else None,
        )
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {host}:{port}: {exc}") from exc
    click.echo(f"Tablestore emulator ready: OTS_ENDPOINT={emulator.endpoint}")
    click.echo(f"OTS_INSTANCENAME={instance} OTS_KEYID={access_key_id} OTS_SECRET={access_key_secret}")
    click.echo(f"storage: {data_file if data_file else 'memory (lost when it stops)'}; "
               f"faults: POST {emulator.endpoint}/_emulator/faults. Ctrl-C to stop.")
    try:
        emulator.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        emulator.stop()
        click.echo("Tablestore emulator stopped.")
