"""``barrage fc serve`` (the local FC API) and ``barrage invoke`` (the FC 3.0 client against it or real
FC; ``--api fc2`` for the FC 2.0 API)."""

from __future__ import annotations

import base64
import io
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
    """A local stand-in for Function Compute (runtimes + the FC 3.0 and 2.0 invoke APIs) from s.yaml."""


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


def _fc3_invoke(endpoint: str, key_id: str, secret: str, token: str, function: str, body: bytes, is_async: bool,
                with_log: bool, qualifier: str | None, region: str) -> tuple[dict[str, str], bytes]:
    """InvokeFunction through the FC 3.0 client; (headers, body). Raises click.ClickException."""
    from urllib.parse import urlsplit

    from alibabacloud_fc20230330 import models
    from alibabacloud_fc20230330.client import Client
    from alibabacloud_tea_openapi import models as openapi
    from darabonba.exceptions import DaraException
    from darabonba.runtime import RuntimeOptions

    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    config = openapi.Config(access_key_id=key_id, access_key_secret=secret, security_token=token or None,
                            region_id=region, endpoint=url.netloc, protocol=url.scheme, read_timeout=120_000,
                            connect_timeout=10_000)
    headers = models.InvokeFunctionHeaders(x_fc_invocation_type="Async" if is_async else "Sync",
                                           x_fc_log_type="Tail" if with_log and not is_async else None)
    request = models.InvokeFunctionRequest(body=io.BytesIO(body), qualifier=qualifier)
    try:
        response = Client(config).invoke_function_with_options(function, request, headers, RuntimeOptions())
    except DaraException as exc:
        status = getattr(exc, "status_code", None)
        raise click.ClickException(f"{status or ''} {getattr(exc, 'code', '') or ''} "
                                   f"{getattr(exc, 'message', exc)}".strip()) from None
    data = response.body.read() if response.body is not None else b""
    return dict(response.headers or {}), data


def _fc2_invoke(endpoint: str, key_id: str, secret: str, token: str, function: str, body: bytes, is_async: bool,
                with_log: bool, qualifier: str | None, service: str) -> tuple[dict[str, str], bytes]:
    import fc2

    client = fc2.Client(endpoint=endpoint, accessKeyID=key_id, accessKeySecret=secret, securityToken=token,
                        Timeout=120)
    headers = {"x-fc-invocation-type": "Async" if is_async else "Sync"}
    if with_log and not is_async:
        headers["x-fc-log-type"] = "Tail"
    try:
        response = client.invoke_function(service, function, payload=body, headers=headers, qualifier=qualifier)
    except fc2.fc_exceptions.FcError as exc:
        if exc.status_code == 200:  # fc2 raises for x-fc-error-type: the function failed, the API did not
            return {"x-fc-error-type": "UnhandledInvocationError"}, str(exc.message).encode("utf-8")
        raise click.ClickException(f"{exc.status_code} {exc.err_code or ''} {exc.message}") from None
    data = response.data
    return dict(response.headers), data if isinstance(data, bytes) else json.dumps(data).encode()


@click.command()
@click.argument("function")
@click.option("--payload", default=None, help="The event, as text.")
@click.option("--payload-file", type=click.File("rb"), default=None, help="The event from a file ('-' for stdin).")
@click.option("--async", "is_async", is_flag=True, help="Asynchronous invocation (202, runs in the background).")
@click.option("--log", "with_log", is_flag=True, help="Print the log tail (x-fc-log-type: Tail).")
@click.option("--api", type=click.Choice(["fc3", "fc2"]), default="fc3", show_default=True,
              help="fc3: InvokeFunction of the FC 3.0 API (alibabacloud-fc20230330); fc2: the FC 2.0 API (fc2).")
@click.option("--service", default="barrage", show_default=True, help="FC 2.0 only: the service name.")
@click.option("--qualifier", default=None, help="Version or alias (default LATEST).")
@click.option("--region", default="cn-hangzhou", show_default=True, help="FC 3.0: the region the keys sign for.")
@click.option("--endpoint", default=None,
              help="The API endpoint, e.g. https://<account-id>.<region>.fc.aliyuncs.com. "
                   f"Default: the local API at http://127.0.0.1:{DEFAULT_PORT}.")
@click.option("--access-key-id", default=None, help="Default: ALIBABA_CLOUD_ACCESS_KEY_ID, or the local key.")
@click.option("--access-key-secret", default=None, help="Default: ALIBABA_CLOUD_ACCESS_KEY_SECRET, or the local one.")
def invoke(function: str, payload: str | None, payload_file: BinaryIO | None, is_async: bool, with_log: bool,
           api: str, service: str, qualifier: str | None, region: str, endpoint: str | None,
           access_key_id: str | None, access_key_secret: str | None) -> None:
    """Invoke FUNCTION through FC's invoke API (FC 3.0 by default) and print what it returned."""
    if payload is not None and payload_file is not None:
        raise click.UsageError("give --payload or --payload-file, not both")
    body = payload.encode("utf-8") if payload is not None else (payload_file.read() if payload_file else b"")
    key_id = access_key_id or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = access_key_secret or os.environ.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    token = os.environ.get("ALIBABA_CLOUD_SECURITY_TOKEN", "")
    if endpoint is None:
        endpoint = f"http://127.0.0.1:{DEFAULT_PORT}"
        key_id, secret = key_id or DEFAULT_ACCESS_KEY_ID, secret or DEFAULT_ACCESS_KEY_SECRET
    elif not key_id or not secret:
        raise click.UsageError("a remote --endpoint needs ALIBABA_CLOUD_ACCESS_KEY_ID/SECRET or the key options")
    if api == "fc3":
        headers, data = _fc3_invoke(endpoint, key_id, secret, token, function, body, is_async, with_log, qualifier,
                                    region)
    else:
        headers, data = _fc2_invoke(endpoint, key_id, secret, token, function, body, is_async, with_log, qualifier,
                                    service)
    lower = {k.lower(): v for k, v in headers.items()}
    if is_async:
        click.echo(f"accepted (async), request id {lower.get('x-fc-request-id', '')}")
        return
    if with_log and lower.get("x-fc-log-result"):
        click.echo(base64.b64decode(lower["x-fc-log-result"]).decode("utf-8", "replace"), err=True)
    click.echo(data.decode("utf-8", "replace"))
    if lower.get("x-fc-error-type"):
        click.echo(f"invoke: the function failed ({lower['x-fc-error-type']})", err=True)
        sys.exit(1)
