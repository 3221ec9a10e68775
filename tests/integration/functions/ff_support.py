"""functions-framework's ASGI app under our server (``functions.serve``) in a subprocess on a loopback port,
as Knative runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from functions.serve import functions_framework_argv
from local.supervisor import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[3]


class FfServer:
    def __init__(self, port: int, process: subprocess.Popen[bytes], log: Path) -> None:
        self.port, self.process, self.log = port, process, log
        self.url = f"http://127.0.0.1:{port}/"

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: Mapping[str, str] | None = None) -> tuple[int, Any]:
        request = urllib.request.Request(self.url.rstrip("/") + path, data=body, headers=dict(headers or {}),
                                         method=method)
        try:
            with urllib.request.urlopen(request, timeout=30) as answer:
                status, raw = answer.status, answer.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        try:
            return status, json.loads(raw)
        except ValueError:
            return status, raw


@contextmanager
def ff_server(source: Path, target: str, log: Path, **environ: str) -> Iterator[FfServer]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OTS_", "ALIBABA_CLOUD_"))}
    env.update(environ)
    env.setdefault("WORKERS", "1")
    process = subprocess.Popen(
        functions_framework_argv(sys.executable, source, target, "127.0.0.1", port),
        cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/healthz", 30, lambda: process.poll() is None)
        yield FfServer(port, process, log)
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
