"""The container entrypoint as the image runs it: each role x workload class, on 127.0.0.1.

Two interpreters:

- ``dev``: this virtual environment, from the repository (always runs);
- ``image``: a fresh virtual environment holding only ``requirements/runtime.txt`` installed from
  a local wheelhouse (``--no-index``: nothing is fetched), and only what the Dockerfile COPYs. It
  stands in for ``docker build`` on machines without a Docker engine: a dependency missing from
  the requirement set, or a file the image does not copy, fails here. Set up the wheelhouse once
  (needs the network)::

      .venv/bin/python -m pip download --quiet --only-binary=:all: -r requirements/runtime.txt \\
          -d .barrage/wheelhouse/runtime
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from local.supervisor import free_port
from tests.golden import http_event, raw

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
WHEELHOUSE = REPO / ".barrage" / "wheelhouse" / "runtime"
SETUP = ".venv/bin/python -m pip download --quiet --only-binary=:all: -r requirements/runtime.txt " \
        "-d .barrage/wheelhouse/runtime"
START_DEADLINE_S = 60.0  # a generous bound on start-up, not a performance assertion


@dataclass(frozen=True)
class Runtime:
    python: str
    app_dir: Path


def dockerfile_copies() -> list[str]:
    """Sources of the final stage's ``COPY`` lines that come from the build context."""
    stages = re.split(r"(?m)^FROM ", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    sources = []
    for line in stages[-1].splitlines():
        parts = line.split()
        if parts[:1] == ["COPY"] and not any(p.startswith("--from") for p in parts):
            sources += [p for p in parts[1:-1] if not p.startswith("--")]
    return sources


def dockerfile_requirements() -> Path:
    match = re.search(r"COPY (\S+) /tmp/runtime\.txt", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert match, "the Dockerfile no longer installs a requirements file through /tmp/runtime.txt"
    return REPO / match.group(1)


@pytest.fixture(scope="module")
def image_runtime(tmp_path_factory: pytest.TempPathFactory) -> Runtime:
    if not WHEELHOUSE.is_dir() or not any(WHEELHOUSE.glob("*.whl")):
        pytest.skip(f"no wheelhouse at {WHEELHOUSE}: run `{SETUP}` once")
    root = tmp_path_factory.mktemp("image")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True)
    python = str(venv / "bin" / "python")
    install = subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-index", "--find-links",
         str(WHEELHOUSE), "--only-binary=:all:", "-r", str(dockerfile_requirements())],
        capture_output=True, text=True,
    )
    assert install.returncode == 0, install.stderr[-2000:]
    app = root / "app"
    app.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for source in dockerfile_copies():
        path = REPO / source
        if path.is_dir():
            shutil.copytree(path, app / source.rstrip("/"), ignore=ignore)
        else:
            shutil.copy(path, app / source)
    return Runtime(python, app)


@pytest.fixture(params=["dev", "image"])
def runtime(request: pytest.FixtureRequest) -> Runtime:
    if request.param == "dev":
        return Runtime(sys.executable, REPO)
    image: Runtime = request.getfixturevalue("image_runtime")
    return image


def dockerfile_app() -> str:
    match = re.search(r"FUNCTIONS_APP=(\S+)", (REPO / "Dockerfile").read_text(encoding="utf-8"))
    assert match, "the Dockerfile no longer names the app (ENV FUNCTIONS_APP=...)"
    return match.group(1)


def environment(tmp_path: Path, role: str, workload_class: str, port: int) -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG", "LC_ALL", "TMPDIR", "SYSTEMROOT")}
    return {**keep, "FUNCTIONS_APP": dockerfile_app(), "ROLE": role, "WORKERS": "1",
            "WORKLOAD_CLASS": workload_class, "HOST": "127.0.0.1", "PORT": str(port),
            "BARRAGE_BUS": "memory", "BARRAGE_DB": str(tmp_path / "barrage.db"), "THREADS": "2",
            "PYTHONDONTWRITEBYTECODE": "1"}


def request(url: str, method: str = "GET", body: bytes | None = None,
            headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.fixture
def start(tmp_path: Path) -> Iterator[object]:
    started: list[subprocess.Popen[bytes]] = []

    def _start(runtime: Runtime, role: str, workload_class: str) -> str:
        port = free_port()
        log = (tmp_path / f"{role}-{workload_class}.log").open("wb")
        process = subprocess.Popen([runtime.python, "-m", "functions.entrypoint"], cwd=runtime.app_dir,
                                   env=environment(tmp_path, role, workload_class, port),
                                   stdout=log, stderr=subprocess.STDOUT)
        started.append(process)
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_DEADLINE_S
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the entrypoint exited with {process.returncode}: {log.name}\n"
                            + Path(log.name).read_text(errors="replace")[-2000:])
            try:
                status, _ = request(f"{base}/healthz")
                if status == 200:
                    return base
            except OSError:
                pass
            time.sleep(0.1)
        pytest.fail(f"no healthy answer within {START_DEADLINE_S}s: " + Path(log.name).read_text(errors="replace"))

    yield _start
    for process in started:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.parametrize("workload_class", ["knative", "fc"])
def test_homepage_sends_and_lists(runtime: Runtime, start, workload_class: str) -> None:
    base = start(runtime, "homepage", workload_class)
    status, body = request(f"{base}/api/barrages", "POST", json.dumps(
        {"room": "entry", "user": "u1", "text": "hello from the image"}).encode(), {"Content-Type": "application/json"})
    assert status == 202, body
    accepted = json.loads(body)["accepted"]
    status, body = request(f"{base}/api/barrages?room=entry")
    assert status == 200
    assert [item["id"] for item in json.loads(body)["items"]] == [accepted[0]["id"]]


@pytest.mark.parametrize("role", ["processor", "manager"])  # manager: the seed's name for the processor
def test_processor_knative_takes_a_binary_cloudevent(runtime: Runtime, start, role: str) -> None:
    base = start(runtime, role, "knative")
    headers, body = http_event("kafkasource_binary_forwarded.json")
    status, answer = request(f"{base}/", "POST", body, headers)
    assert status == 200, answer
    # The same app must refuse what is not a CloudEvent (4xx: KafkaSource dead-letters, no retry).
    status, _ = request(f"{base}/", "POST", b"{}", {"Content-Type": "application/json"})
    assert status == 415


def test_processor_fc_takes_a_kafka_batch(runtime: Runtime, start) -> None:
    base = start(runtime, "processor", "fc")
    status, answer = request(f"{base}/invoke", "POST", raw("fc_kafka_batch.json"),
                             {"Content-Type": "application/octet-stream", "x-fc-request-id": "entrypoint-1",
                              "x-fc-control-path": "/invoke"})
    assert status == 200, answer
    result = json.loads(answer)
    assert result["ok"] == 2 and result["reject"] == 1


@pytest.mark.parametrize(("variable", "value"), [("ROLE", "deadletter"), ("WORKLOAD_CLASS", "lambda"),
                                                 ("PORT", "http"), ("WORKERS", "many"),
                                                 ("FUNCTIONS_APP", "no.such.module")])
def test_unknown_values_exit_2_with_one_line(tmp_path: Path, variable: str, value: str) -> None:
    env = {**environment(tmp_path, "homepage", "knative", free_port()), variable: value}
    done = subprocess.run([sys.executable, "-m", "functions.entrypoint"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and variable in lines[0] and repr(value) in lines[0], done.stderr


def test_dockerfile_copies_only_runtime_code() -> None:
    assert sorted(dockerfile_copies()) == ["functions/", "handlers/"]
    text = (REPO / "Dockerfile").read_text(encoding="utf-8")
    assert text.count("FROM python:3.10-slim") == 2
    assert re.search(r"(?m)^USER 10001$", text), "the image must run as a numeric non-root user"
    assert 'ENTRYPOINT ["python", "-m", "functions.entrypoint"]' in text
    ignore = (REPO / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert "*" in ignore  # an allow-list: everything not re-included stays out of the build context
