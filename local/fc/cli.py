"""``barrage fc serve`` (the local FC API) and ``barrage invoke`` (fc2 against it, or real FC 2.0)."""

from __future__ import annotations

import base64
import json
import os
import signal
import sys
from pathlib import Path
from typing import BinaryIO

import click

from local.fc.api import DEFAULT_ACCESS_KEY_ID, DEFAULT_ACCESS_KEY_SECRET

DEFAULT_PORT = 9080
REPO_ROOT = Path(__file__).resolve().parents[2]


@click.group()
def fc() -> None:
    """A local stand-in for Function Compute (runtime + FC 2.0 invoke API) from s.yaml."""


@fc.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=DEFAULT_PORT, show_default=True, type=click.IntRange(0, 65535))
@click.option("--s-yaml", "s_yaml", default=str(REPO_ROOT / "s.yaml"), show_default=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--code-dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Where handler strings resolve. Default: the source tree beside s.yaml (the built zip holds "
                   "Linux python3.10 wheels, which this interpreter may not load).")
@click.option("--service", default=None, help="FC 2.0 service name for the API paths (default: s.yaml name).")
@click.option("--access-key-id", default=DEFAULT_ACCESS_KEY_ID, show_default=True,
              help="The only key id the API accepts.")
@click.option("--access-key-secret", default=DEFAULT_ACCESS_KEY_SECRET, show_default=True)
@click.option("--wsgi", "wsgi_functions", multiple=True, metavar="FUNCTION",
              help="Serve this HTTP function with FC 2.0's WSGI contract instead of the FC 3.0 event "
                   "(give the WSGI handler in s.yaml or with --handler).")
def serve(host: str, port: int, s_yaml: Path, code_dir: Path | None, service: str | None, access_key_id: str,
          access_key_secret: str, wsgi_functions: tuple[str, ...]) -> None:
    """Serve the functions of s.yaml behind FC's invoke API and HTTP triggers."""
    from local.fc.api import LocalFC, LocalFCServer
    from local.fc.syaml import SYamlError, load

    try:
        # Locally the deployer's exports are not needed: what they name (role, VPC, Kafka instance,
        # cloud endpoints) falls back to "", i.e. the embedded defaults.
        declaration = load(s_yaml, missing="empty")
    except SYamlError as exc:
        raise click.ClickException(str(exc)) from None
    local = LocalFC(declaration, code_dir or s_yaml.parent, {access_key_id: access_key_secret}, service=service,
                    http_kinds={name: "wsgi" for name in wsgi_functions})
    server = LocalFCServer(local, host, port)
    click.echo(f"local FC API: {server.endpoint}  (service {local.service})")
    click.echo(f"  access key id: {access_key_id}  secret: {access_key_secret}")
    if declaration.defaulted:
        click.echo(f"  unset, empty locally: {', '.join(declaration.defaulted)}")
    for spec in declaration.functions:
        trigger = f"  HTTP: {server.endpoint}/http/{spec.name}/" if spec.is_http else ""
        click.echo(f"  {spec.name}: {spec.handler} ({spec.runtime}){trigger}")
    click.echo("Ctrl-C stops it.")

    def _stop(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt  # so SIGTERM also stops the worker processes below

    signal.signal(signal.SIGTERM, _stop)
    try:
        server.server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server.server_close()
        local.close()


@click.command()
@click.argument("function")
@click.option("--payload", default=None, help="The event, as text.")
@click.option("--payload-file", type=click.File("rb"), default=None, help="The event from a file ('-' for stdin).")
@click.option("--async", "is_async", is_flag=True, help="Asynchronous invocation (202, runs in the background).")
@click.option("--log", "with_log", is_flag=True, help="Print the log tail (x-fc-log-type: Tail).")
@click.option("--service", default="barrage", show_default=True)
@click.option("--qualifier", default=None)
@click.option("--endpoint", default=None,
              help=f"FC 2.0 endpoint, e.g. https://<account>.<region>.fc.aliyuncs.com. "
                   f"Default: the local API at http://127.0.0.1:{DEFAULT_PORT}.")
@click.option("--access-key-id", default=None, help="Default: ALIBABA_CLOUD_ACCESS_KEY_ID, or the local key.")
@click.option("--access-key-secret", default=None, help="Default: ALIBABA_CLOUD_ACCESS_KEY_SECRET, or the local one.")
def invoke(function: str, payload: str | None, payload_file: BinaryIO | None, is_async: bool,
           with_log: bool, service: str, qualifier: str | None, endpoint: str | None, access_key_id: str | None,
           access_key_secret: str | None) -> None:
    """Invoke FUNCTION through the fc2 client and print what it returned."""
    import fc2

    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    body = payload.encode("utf-8") if payload is not None else (payload_file.read() if payload_file else b"")
    key_id = access_key_id or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = access_key_secret or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if endpoint is None:
        endpoint = f"http://127.0.0.1:{DEFAULT_PORT}"
        key_id, secret = key_id or DEFAULT_ACCESS_KEY_ID, secret or DEFAULT_ACCESS_KEY_SECRET
    elif not key_id or not secret:
        raise click.UsageError("a remote --endpoint needs ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET or the key options")
    client = fc2.Client(endpoint=endpoint, accessKeyID=key_id, accessKeySecret=secret,
                        securityToken=os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN", ""), Timeout=120)
    headers = {"x-fc-invocation-type": "Async" if is_async else "Sync"}
    if with_log and not is_async:
        headers["x-fc-log-type"] = "Tail"
    try:
        response = client.invoke_function(service, function, payload=body, headers=headers, qualifier=qualifier)
    except fc2.fc_exceptions.FcError as exc:
        click.echo(f"invoke: {exc.status_code} {exc.err_code or ''} {exc.message}", err=True)
        sys.exit(1)
    request_id = response.headers.get("x-fc-request-id", "")
    if is_async:
        click.echo(f"accepted (async), request id {request_id}")
        return
    if with_log and response.headers.get("x-fc-log-result"):
        click.echo(base64.b64decode(response.headers["x-fc-log-result"]).decode("utf-8", "replace"), err=True)
    data = response.data
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else json.dumps(data)
    click.echo(text)
