"""Browser tests against a real HomePage process, as ``barrage up`` runs it, on a free loopback port.

Chromium is Debian's (/usr/bin/chromium); Playwright's own browser download is not used.
On failure, a screenshot of the page goes to artifacts/<test>.png.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from functions.serve import functions_framework_argv
from local.stack import server_env
from local.supervisor import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "artifacts"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]

_reports: pytest.StashKey[dict[str, pytest.TestReport]] = pytest.StashKey()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    item.stash.setdefault(_reports, {})[report.when] = report
    return report


class Server:
    def __init__(self, base_url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
        self.base_url = base_url
        self.process = process
        self.log_path = log_path

    def post_json(self, path: str, body: object) -> tuple[int, Any]:
        request = urllib.request.Request(self.base_url + path, data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())


@contextlib.contextmanager
def running_homepage(data: Path, **environ: str) -> Iterator[Server]:
    """The HomePage as ``barrage up`` runs it (functions-framework's ASGI app under ``functions.serve``) on a
    free loopback port."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_SERVER", "OTS_ENDPOINT")}
    env.update({"BARRAGE_DB": str(data / "barrage.db"), "BARRAGE_BUS": "memory", "PYTHONUNBUFFERED": "1",
                **server_env(), **environ})
    log_path = data / "server.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            functions_framework_argv(sys.executable, "functions/main.py", "homepage", "127.0.0.1", port),
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, so teardown also ends any worker process
        )
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    try:
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"HomePage exited early:\n{log_path.read_text()}")
            try:
                with urllib.request.urlopen(base_url + "/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"HomePage did not answer /healthz in 30 s:\n{log_path.read_text()}")
            time.sleep(0.1)
        yield Server(base_url, process, log_path)
    finally:
        # SIGINT is gunicorn's quick shutdown; a worker still holding an event stream is
        # only let go at the graceful timeout, so do not wait for that.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(3)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(5)
        else:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)  # a worker orphaned mid-stream


@pytest.fixture(scope="session")
def homepage_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with running_homepage(tmp_path_factory.mktemp("homepage")) as server:
        yield server


@pytest.fixture(scope="session")
def polling_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A HomePage that does not stream (``BARRAGE_MAX_STREAMS=0``, as on FC's built-in runtimes)."""
    with running_homepage(tmp_path_factory.mktemp("homepage-polling"), BARRAGE_MAX_STREAMS="0") as server:
        yield server


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    if not Path(CHROMIUM).exists():
        pytest.skip(f"{CHROMIUM} is not installed")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        instance = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            yield instance
        finally:
            instance.close()


class PageProbe:
    """What a page did that the tests care about: dialogs and CSP violations."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.csp_violations: list[str] = []
        self.page_errors: list[str] = []


@pytest.fixture
def probe() -> PageProbe:
    return PageProbe()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest, probe: PageProbe) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    page = context.new_page()
    page.set_default_timeout(15_000)

    def on_dialog(dialog: Any) -> None:
        probe.dialogs.append(dialog.message)
        dialog.dismiss()

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text or "Content-Security-Policy" in message.text:
            probe.csp_violations.append(message.text)

    page.on("dialog", on_dialog)
    page.on("console", on_console)
    page.on("pageerror", lambda error: probe.page_errors.append(str(error)))
    try:
        yield page
    finally:
        report = request.node.stash.get(_reports, {}).get("call")
        if report is not None and report.failed:
            ARTIFACTS.mkdir(exist_ok=True)
            name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
            try:
                page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)
            except Exception as exc:  # a crashed page must not hide the test's own failure
                print(f"could not save a failure screenshot: {exc}")
        context.close()
