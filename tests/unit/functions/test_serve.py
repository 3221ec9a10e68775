"""The servers' settings (``functions.serve.ServerOptions``), the commands that start them, and the request clock."""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from functions.entrypoint import EntrypointError, plan
from functions.http_limits import Phase, ReadLimits, RequestClock, protocol_class
from functions.http_limits_h11 import H11WithDeadlines
from functions.http_limits_httptools import HttpToolsWithDeadlines
from functions.serve import ServeError, ServerOptions, config_for, container_argv, functions_framework_argv
from functions.targets import SOURCE_FILE


def test_defaults() -> None:
    options = ServerOptions.from_environ({})
    assert options == ServerOptions(workers=os.cpu_count() or 1, limit_concurrency=10_000, timeout_keep_alive=5,
                                    backlog=2048, header_timeout_s=10.0, body_timeout_s=30.0,
                                    max_header_bytes=65_536, graceful_timeout_s=30.0, http="auto")
    assert options.read_limits == ReadLimits(10.0, 30.0, 65_536, 240)


def test_every_setting_is_read() -> None:
    options = ServerOptions.from_environ({
        "WORKERS": "3", "SERVER_MAX_CONNECTIONS": "500", "SERVER_KEEPALIVE_S": "7", "SERVER_BACKLOG": "64",
        "SERVER_HEADER_TIMEOUT_S": "2.5", "SERVER_BODY_TIMEOUT_S": " 12 ", "SERVER_MAX_HEADER_BYTES": "8192",
        "SERVER_BODY_MIN_RATE": "0", "SERVER_GRACEFUL_TIMEOUT_S": "1", "SERVER_HTTP": "H11"})
    assert options == ServerOptions(3, 500, 7, 64, 2.5, 12.0, 8192, 0, 1.0, "h11")


@pytest.mark.parametrize(("name", "value"), [
    ("WORKERS", "0"), ("WORKERS", "two"), ("WORKERS", "-1"), ("WORKERS", "1.5"), ("WORKERS", "٣"),
    ("SERVER_MAX_CONNECTIONS", "0"), ("SERVER_KEEPALIVE_S", "x"), ("SERVER_BACKLOG", "1e3"),
    ("SERVER_HEADER_TIMEOUT_S", "0"), ("SERVER_HEADER_TIMEOUT_S", "-1"), ("SERVER_HEADER_TIMEOUT_S", "inf"),
    ("SERVER_HEADER_TIMEOUT_S", "nan"), ("SERVER_BODY_TIMEOUT_S", "1e3"), ("SERVER_BODY_TIMEOUT_S", "90000"),
    ("SERVER_BODY_TIMEOUT_S", "ten"), ("SERVER_MAX_HEADER_BYTES", "512"), ("SERVER_GRACEFUL_TIMEOUT_S", "0.0"),
    ("SERVER_BODY_MIN_RATE", "-5"), ("SERVER_BODY_MIN_RATE", "fast"), ("SERVER_HTTP", "h2"),
])
def test_a_bad_value_is_one_line_naming_the_variable(name: str, value: str) -> None:
    with pytest.raises(ServeError) as raised:
        ServerOptions.from_environ({name: value})
    message = str(raised.value)
    assert "\n" not in message and message.startswith(name) and repr(value) in message


def test_the_entrypoint_refuses_a_bad_server_setting_in_one_line() -> None:
    environ = {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage",
               "SERVER_HEADER_TIMEOUT_S": "soon"}
    with pytest.raises(EntrypointError, match=r"^SERVER_HEADER_TIMEOUT_S must be .* got 'soon'$"):
        plan(environ)


def test_both_workload_classes_run_functions_serve() -> None:
    base = {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage", "HOST": "127.0.0.1",
            "WORKERS": "2"}
    knative = plan({**base, "PORT": "8088"}, python="/py")
    assert list(knative.argv) == functions_framework_argv("/py", SOURCE_FILE, "homepage", "127.0.0.1", 8088)
    assert knative.argv[:4] == ("/py", "-m", "functions.serve", "functions-framework")
    assert knative.env["WORKERS"] == "2"
    fc = plan({**base, "WORKLOAD_CLASS": "fc", "CAPort": "9001"}, python="/py")
    assert list(fc.argv) == container_argv("/py", "127.0.0.1", 9001) == \
        ["/py", "-m", "functions.serve", "container", "--host", "127.0.0.1", "--port", "9001"]


def test_the_uvicorn_config_carries_the_limits() -> None:
    options = ServerOptions.from_environ({"WORKERS": "2", "SERVER_MAX_CONNECTIONS": "50",
                                          "SERVER_HEADER_TIMEOUT_S": "3", "SERVER_HTTP": "h11"})
    config = config_for("functions.serve:container_factory", "127.0.0.1", 9000, options, lifespan="on")
    assert (config.workers, config.limit_concurrency, config.timeout_graceful_shutdown) == (2, 50, 30.0)
    assert config.read_limits == ReadLimits(3.0, 30.0, 65_536, 240)
    assert config.http is H11WithDeadlines and config.factory
    assert config.h11_max_incomplete_event_size > options.max_header_bytes  # our 431 comes before h11's 400


def test_the_parser_follows_what_is_installed() -> None:
    assert protocol_class("auto") is HttpToolsWithDeadlines  # httptools is in the dev environment
    assert protocol_class("httptools") is HttpToolsWithDeadlines
    assert protocol_class("h11") is H11WithDeadlines


def test_functions_serve_exits_2_with_one_line_on_a_bad_setting() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "functions.serve", "container", "--port", "1"],
                          env={**os.environ, "SERVER_BODY_TIMEOUT_S": "0"}, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "functions.serve: SERVER_BODY_TIMEOUT_S must be a number of seconds above 0 (at most 86400), got '0'"]


# -- the request clock, on a real event loop with short deadlines ---------------------------------


class Recorder:
    def __init__(self) -> None:
        self.expired: list[str] = []
        self.server_waits = False


def clock_for(loop: asyncio.AbstractEventLoop, recorder: Recorder, header_s: float = 0.05,
              body_s: float = 0.05, min_rate: int = 0) -> RequestClock:
    def body_expired(message: str) -> None:
        recorder.expired.append("body" if message.startswith("no byte") else "rate")

    return RequestClock(loop, ReadLimits(header_s, body_s, 65_536, min_rate),
                        lambda: recorder.expired.append("headers"), body_expired, lambda: recorder.server_waits)


def test_the_header_deadline_expires_once_and_ends_the_clock() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder)
        clock.headers_begin()
        await asyncio.sleep(0.03)
        clock.headers_begin()  # more bytes of the same request: the deadline does not move
        await asyncio.sleep(0.05)
        assert clock.phase == Phase.CLOSED
        return recorder.expired

    assert asyncio.run(scenario()) == ["headers"]


def test_headers_in_time_then_a_body_that_keeps_coming() -> None:
    async def scenario() -> tuple[list[str], int]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder)
        clock.headers_begin()
        await asyncio.sleep(0.02)
        clock.headers_end()
        clock.body_wait()
        for _ in range(6):  # 0.18 s of body, never silent for 0.05 s
            await asyncio.sleep(0.03)
            clock.body_progress(10)
        clock.body_end()
        await asyncio.sleep(0.1)
        return recorder.expired, clock.phase

    assert asyncio.run(scenario()) == ([], Phase.IDLE)


def test_the_body_deadline_does_not_run_while_the_server_waits() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder)
        clock.headers_end()
        clock.body_wait()
        recorder.server_waits = True  # e.g. the app has not read what arrived
        await asyncio.sleep(0.2)
        assert recorder.expired == []
        recorder.server_waits = False
        clock.server_resumed()  # reading resumes
        await asyncio.sleep(0.2)  # and the client sends nothing
        return recorder.expired

    assert asyncio.run(scenario()) == ["body"]


def test_a_body_that_trickles_below_the_rate_expires_though_never_silent() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder, body_s=0.1, min_rate=1000)
        clock.headers_end()
        clock.body_wait()
        for _ in range(20):  # a byte every 0.02 s: 50 bytes a second, never silent for 0.1 s
            await asyncio.sleep(0.02)
            if clock.phase == Phase.CLOSED:
                break
            clock.body_progress(1)
        return recorder.expired

    assert asyncio.run(scenario()) == ["rate"]


def test_a_body_at_the_rate_is_read_whole_and_a_server_wait_restarts_the_measure() -> None:
    async def scenario() -> tuple[list[str], int]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder, body_s=0.1, min_rate=1000)
        clock.headers_end()
        clock.body_wait()
        recorder.server_waits = True  # the app is not reading: none of this counts against the client
        await asyncio.sleep(0.25)
        recorder.server_waits = False
        clock.server_resumed()
        for _ in range(10):  # 100 bytes every 0.02 s: 5,000 a second
            await asyncio.sleep(0.02)
            clock.body_progress(100)
        clock.body_end()
        return recorder.expired, clock.phase

    assert asyncio.run(scenario()) == ([], Phase.IDLE)


def test_closing_cancels_the_clock() -> None:
    async def scenario() -> list[str]:
        recorder = Recorder()
        clock = clock_for(asyncio.get_running_loop(), recorder)
        clock.headers_begin()
        clock.close()
        clock.headers_begin()
        await asyncio.sleep(0.1)
        return recorder.expired

    assert asyncio.run(scenario()) == []
