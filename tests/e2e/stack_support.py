"""Runs the whole local stack as ``barrage up`` does, on free loopback ports."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local import processes
from local.runfile import RUN_FILE_NAME, RunRecord, live_processes, read_run_file
from local.supervisor import free_port, port_is_free
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[2]


def request_json(url: str, body: object | None = None, timeout: float = 15) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"},
                                     method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


@dataclass
class Stack:
    process: subprocess.Popen[bytes]
    log_path: Path
    ports: dict[str, int]
    data_dir: Path | None = None

    @property
    def run_file(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / RUN_FILE_NAME

    def record(self) -> RunRecord:
        """The run file as the running stack wrote it."""
        record = read_run_file(self.run_file)
        assert record is not None, f"no run file at {self.run_file}"
        return record

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['homepage']}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['broker']}"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def child_pids(self, *needles: str) -> list[int]:
        """Processes of this stack whose command line holds every needle."""
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            line = " ".join(a.decode(errors="replace") for a in argv)
            if all(needle in line for needle in needles):
                found.append(int(entry.name))
        return found

    def post_many(self, room: str, count: int, concurrency: int = 8, per_request: int = 10) -> set[str]:
        """Post ``count`` barrages from ``concurrency`` threads; the ids accepted."""
        accepted: set[str] = set()
        lock = threading.Lock()

        def post(start: int) -> None:
            items = [{"room": room, "user": f"user-{(start + j) % 9}", "text": f"e2e barrage {start + j}"}
                     for j in range(min(per_request, count - start))]
            for _attempt in range(20):
                status, body = request_json(f"{self.url}/api/barrages", items)
                if status == 202 and not body["failed"]:
                    with lock:
                        accepted.update(a["id"] for a in body["accepted"])
                    return
                time.sleep(0.5)
            raise AssertionError(f"posting kept failing: {status} {body}")

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(post, range(0, count, per_request)))
        return accepted

    def visible_ids(self, room: str) -> list[str]:
        """Every barrage of the room through the fetch API, paging from the beginning."""
        ids: list[str] = []
        cursor = ""  # empty: from the beginning
        while True:
            status, page = request_json(f"{self.url}/api/barrages?room={room}&limit=500&since={cursor}")
            assert status == 200, page
            ids.extend(item["id"] for item in page["items"])
            cursor = page["cursor"]
            if len(page["items"]) < 500:
                return ids

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)


def stack_argv(data_dir: Path, ports: dict[str, int], *extra: str) -> list[str]:
    return [sys.executable, "-m", "local.cli", "up", "--data-dir", str(data_dir),
            "--port", str(ports["homepage"]), "--processor-port", str(ports["processor"]),
            "--broker-port", str(ports["broker"]), "--tablestore-port", str(ports["tablestore"]), *extra]


def stack_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_SERVER", "OTS_ENDPOINT")}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def start_stack(work_dir: Path, *extra: str, timeout_s: float = 90, ports: dict[str, int] | None = None,
                env: dict[str, str] | None = None, own_session: bool = False, wait_dispatcher: bool = True,
                log_name: str = "stack.log") -> Stack:
    """``barrage up`` on free ports (or ``ports``) with its data in ``work_dir/data``.
    ``own_session``: its own process group, which a test can Ctrl-C as a terminal does."""
    ports = ports or {name: free_port() for name in ("homepage", "processor", "broker", "tablestore")}
    log_path = work_dir / log_name
    data_dir = work_dir / "data"
    with log_path.open("wb") as log:
        process = subprocess.Popen(stack_argv(data_dir, ports, *extra), cwd=ROOT, env=env or stack_env(),
                                   stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   start_new_session=own_session)
    stack = Stack(process, log_path, ports, data_dir)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in stack.log() or process.poll() is not None, timeout_s,
                 "the stack to come up")
        if process.poll() is not None:
            raise RuntimeError(f"barrage up exited with {process.returncode}:\n{stack.log()}")
        if wait_dispatcher:  # the dispatcher's consumer group needs a few seconds to get its partitions
            wait_for(lambda: "assigned" in stack.log(), 30, "the dispatcher's partitions")
    except BaseException:
        stack.stop()
        raise
    return stack


def leftovers(record: RunRecord) -> list[int]:
    """Pids of that run still alive: recorded or carrying its token, or in a child's process group."""
    found = {p.pid for p in live_processes(record)}
    groups = processes.live_groups([child.pid for child in record.children])
    found.update(info.pid for info in processes.all_processes() if info.group in groups and not info.zombie)
    return sorted(found)


def assert_all_gone(record: RunRecord, ports: dict[str, int] | None, timeout_s: float = 5) -> None:
    """No process of the stack remains and (unless ``ports`` is None: a successor holds them
    now) each of its ports can be bound again."""
    wait_for(lambda: not leftovers(record), timeout_s, "no process of the stack to remain")
    if ports is None:
        return
    wanted = {*ports.values(), *(port for child in record.children for port in child.ports)}
    busy = sorted(port for port in wanted if not port_is_free("127.0.0.1", port))
    assert not busy, f"ports still held: {busy}"


def kill_leftovers(record: RunRecord) -> None:
    """After a failed test: nothing of the stack may outlive it."""
    for pid in leftovers(record):
        processes.kill_process(pid)
