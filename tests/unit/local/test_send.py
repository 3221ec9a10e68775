"""``barrage send`` against real HTTP servers on 127.0.0.1 (the HomePage app, and stubs)."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from werkzeug.serving import BaseWSGIServer, make_server

from functions.adapters.memory import InProcessPublisher, MemoryResultStore
from functions.config import Settings
from functions.homepage import HomePageOptions, create_app
from functions.loadrun import Latency, LoadStats
from functions.wiring import Services, process_config
from handlers.ports import SystemClock
from local.cli import main
from local.send import summary_table
from tests.asgi_server import serving


def serve(app: Any) -> Iterator[str]:
    server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        thread.join(5)


@pytest.fixture
def homepage(tmp_path: Path) -> Iterator[tuple[str, MemoryResultStore]]:
    settings = Settings.from_environ({"BARRAGE_BUS": "memory", "BARRAGE_DB": str(tmp_path / "unused.db")})
    clock = SystemClock()
    store = MemoryResultStore()
    services = Services(settings, store, InProcessPublisher(store, clock, process_config(settings)), clock,
                        process_config(settings))
    with serving(create_app(services, HomePageOptions())) as url:
        yield url, store
    services.close()


def stub(status: int, body: dict[str, Any]) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
        start_response(f"{status} X", [("Content-Type", "application/json")])
        return [json.dumps(body).encode()]

    return app


def run(*args: str) -> Any:
    return CliRunner().invoke(main, ["send", *args])


def table_value(output: str, name: str) -> str:
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0] == name:
            return cells[1]
    raise AssertionError(f"{name} not in summary:\n{output}")


def test_count_run_sends_exactly_and_summarises(homepage: tuple[str, MemoryResultStore]) -> None:
    url, store = homepage
    result = run("--url", url, "--room", "cli", "--message", "hi there", "--concurrency", "4", "--count", "60")
    assert result.exit_code == 0, result.output
    assert table_value(result.output, "sent") == "60"
    assert table_value(result.output, "accepted") == "60"
    assert table_value(result.output, "rejected") == "0"
    assert table_value(result.output, "errors") == "0"
    for name in ("throughput", "latency p50", "latency p95", "latency p99"):
        assert table_value(result.output, name) != "-"
    assert store.count() == 60
    assert {b.text for b in store.since("cli", None, 100).items} == {"hi there"}


def test_duration_run_stops_on_time(homepage: tuple[str, MemoryResultStore]) -> None:
    url, store = homepage
    result = run("--url", url, "--concurrency", "2", "--duration", "0.5")
    assert result.exit_code == 0, result.output
    sent = int(table_value(result.output, "sent"))
    assert sent > 0 and store.count() == sent
    assert 0.5 <= float(table_value(result.output, "elapsed").split()[0]) < 10


def test_server_rejections_are_counted() -> None:
    for url in serve(stub(400, {"error": {"status": 400, "message": "text: nope"}})):
        result = run("--url", url, "--count", "5", "--concurrency", "1")
    assert result.exit_code == 1  # nothing accepted
    assert table_value(result.output, "rejected") == "5"
    assert table_value(result.output, "errors") == "0"


def test_server_errors_are_counted_with_the_message() -> None:
    for url in serve(stub(503, {"error": {"status": 503, "message": "bus down"}})):
        result = run("--url", url, "--count", "3", "--concurrency", "2")
    assert result.exit_code == 1
    assert table_value(result.output, "errors") == "3"
    assert "bus down" in result.output


def test_unreachable_server_is_errors_not_a_crash() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        result = run("--url", f"http://127.0.0.1:{port}", "--count", "3", "--concurrency", "1")
    assert result.exit_code == 1
    assert table_value(result.output, "errors") == "3"
    assert "ConnectionRefusedError" in result.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--concurrency", "0"], "--concurrency must be between"),
        (["--concurrency", "many"], "'many' is not a valid integer"),
        (["--duration", "1", "--count", "2"], "not both"),
        (["--count", "0"], "--count must be at least 1"),
        (["--duration", "0"], "--duration must be more than 0"),
        (["--duration", "nan"], "--duration must be more than 0"),
        (["--url", "ftp://127.0.0.1"], "--url must be an http(s) URL"),
        (["--url", "http://127.0.0.1:99999"], "bad port"),
        (["--room", "a b"], "--room: must match"),
        (["--user", ""], "--user: must match"),
        (["--message", "   "], "--message: must not be empty"),
        (["--message", "x" * 201], "--message: must be at most 200"),
        (["--bogus"], "No such option"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(args: list[str], message: str) -> None:
    result = run(*args)
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert lines[0].startswith("barrage send: ") and message in lines[0]


def test_summary_table_shape() -> None:
    stats = LoadStats(state="finished", sent=10, accepted=9, rejected=1, errors=0, elapsed_s=2.0, throughput=4.5,
                      latency=Latency(1.0, 2.5, None), progress=1.0)
    table = summary_table(stats).splitlines()
    assert table[0] == table[-1] and table[0].startswith("+-")
    assert len({len(line) for line in table}) == 1
    assert table_value("\n".join(table), "latency p95") == "2.50 ms"
    assert table_value("\n".join(table), "latency p99") == "-"


def test_send_is_listed_in_the_cli() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert "send" in result.output
