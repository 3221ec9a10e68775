"""The custom-container server as FC runs it: a subprocess on a loopback port."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from local.supervisor import free_port, wait_healthy

REPO = Path(__file__).resolve().parents[3]
EVENTS = REPO / "tests" / "events"
pytestmark = pytest.mark.integration


class Container:
    def __init__(self, role: str, db: Path, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OTS_", "ALIBABA_CLOUD_"))}
        env.update({"BARRAGE_DB": str(db), "BARRAGE_BUS": "memory", "PYTHONUNBUFFERED": "1"})
        self.process = subprocess.Popen(
            [sys.executable, "-m", "local.cli", "serve", "--workload-class", "fc", "--role", role,
             "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=REPO, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True)
        # /healthz exists on the HomePage; on the processor a 404 answer still proves it listens.
        wait_healthy(f"{self.url}/healthz", 30, lambda: self.process.poll() is None)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.url + path, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request) as answer:
                return answer.status, dict(answer.headers), answer.read()
        except urllib.error.HTTPError as error:
            return error.code, dict(error.headers), error.read()

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def processor(tmp_path: Path) -> Iterator[Container]:
    container = Container("processor", tmp_path / "b.db", tmp_path / "processor.log")
    yield container
    container.stop()


@pytest.fixture
def homepage(tmp_path: Path) -> Iterator[Container]:
    container = Container("homepage", tmp_path / "b.db", tmp_path / "homepage.log")
    yield container
    container.stop()


def fc_headers(request_id: str, control: str) -> dict[str, str]:
    return {"x-fc-request-id": request_id, "x-fc-control-path": control, "x-fc-function-name": "barrage-processor",
            "x-fc-access-key-id": "STS.local", "x-fc-access-key-secret": "s", "x-fc-security-token": "t",
            "Content-Type": "application/octet-stream"}


def test_initialize_then_invoke(processor: Container) -> None:
    status, headers, _ = processor.post("/initialize", b"", fc_headers("init-1", "/initialize"))
    assert status == 200 and headers["x-fc-status"] == "200"
    status, headers, body = processor.post("/invoke", (EVENTS / "fc_kafka_batch.json").read_bytes(),
                                           fc_headers("inv-1", "/invoke"))
    assert status == 200 and headers["x-fc-status"] == "200"
    result: dict[str, Any] = json.loads(body)
    assert (result["ok"], result["reject"]) == (2, 1)
    processor.stop()
    log = processor.log.read_text()
    assert "FC Invoke Start RequestId: inv-1" in log and "FC Invoke End RequestId: inv-1" in log


def test_invoke_error_is_404_with_x_fc_status(processor: Container) -> None:
    status, headers, body = processor.post("/invoke", b"not json", fc_headers("inv-2", "/invoke"))
    assert status == 404 and headers["x-fc-status"] == "404"
    assert json.loads(body)["errorType"] == "InvalidInvocation"


def test_homepage_http_passthrough(homepage: Container) -> None:
    body = json.dumps({"room": "c-room", "user": "u", "text": "through the container"}).encode()
    status, _, answer = homepage.post("/api/barrages", body, {"Content-Type": "application/json",
                                                              "x-fc-request-id": "http-1",
                                                              "x-fc-control-path": "/http-invoke"})
    assert status == 202, answer
    with urllib.request.urlopen(f"{homepage.url}/api/barrages?room=c-room") as response:
        assert [i["text"] for i in json.loads(response.read())["items"]] == ["through the container"]
    homepage.stop()
    assert "FC Invoke Start RequestId: http-1" in homepage.log.read_text()
