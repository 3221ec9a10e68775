"""The README's "Write your own function", followed literally: its hello.py, its command, its request."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from local.supervisor import free_port
from tests.waiting import wait_for

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def section() -> str:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    start = text.index("## Write your own function")
    return text[start:text.index("\n## ", start + 3)]


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", section(), flags=re.S)


def post(url: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_hello_function_runs_as_written(tmp_path: Path) -> None:
    (code,) = blocks("python")
    (tmp_path / "hello.py").write_text(code, encoding="utf-8")
    commands = [line for line in blocks("sh")[0].replace("\\\n", " ").splitlines() if line.strip()]
    run, curl = shlex.split(commands[0]), shlex.split(commands[1])
    assert run[0].endswith("/.venv/bin/barrage") and run[1:4] == ["run", "hello", "greet"]
    port = free_port()
    argv = [str(REPO / ".venv" / "bin" / "barrage"), *run[1:-1], str(port)]  # the README's port may be busy here
    log = (tmp_path / "run.log").open("wb")
    process = subprocess.Popen(argv, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
    try:
        headers = dict(curl[i + 1].split(": ", 1) for i, arg in enumerate(curl) if arg == "-H")
        body = curl[curl.index("-d") + 1].encode()
        url = curl[curl.index("POST") + 1].replace("8081", str(port))

        def healthy() -> bool:
            try:
                with urllib.request.urlopen(url + "healthz", timeout=1) as answer:
                    return bool(answer.status == 200)
            except OSError:
                return False

        wait_for(healthy, 30, "barrage run to serve hello.greet")
        status, report = post(url, headers, body)
        assert status == 200 and report["results"] == [{"id": "1", "status": "ok", "reason": ""}]
        status, report = post(url, {**headers, "ce-id": "2"}, b'{"nobody": 1}')
        assert status == 400 and report["results"][0]["reason"] == "no name"  # type: ignore[index]
    finally:
        process.terminate()
        process.wait(10)
    assert "hello, ada" in (tmp_path / "run.log").read_text()


def test_an_unknown_function_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "hello.py").write_text(blocks("python")[0], encoding="utf-8")
    done = subprocess.run([sys.executable, "-m", "local.cli", "run", "hello", "nope"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60, env={"PYTHONPATH": str(REPO)})
    assert done.returncode == 2 and "has no function 'nope'" in done.stderr.strip()
