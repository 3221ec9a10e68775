"""Shared pieces of the benchmarks: child processes (started and cleaned up), clients, figures.

Not a benchmark itself. Everything listens on and talks to 127.0.0.1 only.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.supervisor import free_port

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

BASE_MS = 1_767_225_600_000


# -- figures ----------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else float("nan")


def emit_json(payload: dict[str, Any]) -> None:
    """The machine-readable result, as the last line of stdout (bench/run_all.py reads it)."""
    print("RESULT " + json.dumps(payload, sort_keys=True), flush=True)


def machine() -> dict[str, str]:
    cpu = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu": cpu,
        "memory": memory,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


# -- processes --------------------------------------------------------------------------------


def _children_of() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # pid (comm) state ppid ...; comm may hold spaces and parentheses
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        tree.setdefault(ppid, []).append(int(entry.name))
    return tree


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, grandchildren, ...)."""
    tree = _children_of()
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def kill_pids(pids: Sequence[int], grace_s: float = 5.0) -> None:
    """SIGTERM the given processes (ours), then SIGKILL what is still there after ``grace_s``."""
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.05)
    for pid in pids:
        if _alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


@dataclass
class Child:
    """A child process in its own session; ``stop`` ends it and everything it started."""

    process: subprocess.Popen[bytes]
    log_path: Path
    known: set[int] = field(default_factory=set)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def remember_descendants(self) -> None:
        self.known.update(descendants(self.process.pid))

    def stop(self, first_signal: int = signal.SIGTERM, grace_s: float = 30.0) -> None:
        self.remember_descendants()
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(first_signal)
            try:
                self.process.wait(grace_s)
            except subprocess.TimeoutExpired:
                self.remember_descendants()
                self.process.kill()
                self.process.wait(10)
        leftovers = [pid for pid in self.known if _alive(pid)]
        if leftovers:
            kill_pids(leftovers)


def spawn(argv: Sequence[str], env: dict[str, str], log_path: Path) -> Child:
    with log_path.open("wb") as log:
        process = subprocess.Popen(list(argv), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                   stdin=subprocess.DEVNULL, start_new_session=True)
    return Child(process, log_path)


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, every_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(every_s)
    raise RuntimeError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status < 500)
    except OSError:
        return False


def base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("KAFKA_SERVER", "OTS_ENDPOINT", "TRACING")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


@contextlib.contextmanager
def processor_server(db: Path, log_dir: Path, container_concurrency: int | None = None,
                     threads: int | None = None, workers: int = 1) -> Iterator[tuple[str, Child]]:
    """The processor exactly as ``barrage up`` runs it (functions-framework's app under functions.serve, same env)."""
    from local.stack import StackOptions, stack_specs

    port = free_port()
    options = StackOptions(data_dir=db.parent, processor_port=port, kafka_server="127.0.0.1:1",
                           container_concurrency=container_concurrency, processors=workers)
    spec = next(s for s in stack_specs(options)[0] if s.name == "processor")
    env = {**base_env(), **spec.env, "BARRAGE_DB": str(db)}
    if threads is not None:
        env["THREADS"] = str(threads)
    child = spawn(spec.argv, env, log_dir / "processor.log")
    url = f"http://127.0.0.1:{port}/"
    try:
        wait_for(lambda: healthy(url + "healthz") or child.process.poll() is not None, 60, "the processor")
        if child.process.poll() is not None:
            raise RuntimeError(f"processor exited:\n{child.log()}")
        child.remember_descendants()
        yield url, child
    finally:
        child.stop()


@dataclass
class Stack:
    """``barrage up`` as a child process on free ports."""

    child: Child
    ports: dict[str, int]
    data_dir: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.ports['homepage']}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.ports['broker']}"

    @property
    def db(self) -> Path:
        return self.data_dir / "barrage.db"

    def pids(self, needle: str) -> list[int]:
        """Descendant processes whose command line holds ``needle``."""
        found = []
        for pid in descendants(self.child.process.pid):
            try:
                line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if needle in line:
                found.append(pid)
        return found

    def stop(self) -> None:
        self.child.stop(signal.SIGINT, grace_s=60)


@contextlib.contextmanager
def running_stack(work: Path, *extra: str) -> Iterator[Stack]:
    ports = {name: free_port() for name in ("homepage", "processor", "broker", "tablestore")}
    data_dir = work / "data"
    argv = [sys.executable, "-m", "local.cli", "up", "--data-dir", str(data_dir),
            "--port", str(ports["homepage"]), "--processor-port", str(ports["processor"]),
            "--broker-port", str(ports["broker"]), "--tablestore-port", str(ports["tablestore"]), *extra]
    child = spawn(argv, base_env(), work / "stack.log")
    stack = Stack(child, ports, data_dir)
    try:
        wait_for(lambda: "Ctrl-C stops everything" in child.log() or child.process.poll() is not None, 120,
                 "the stack to come up", 0.2)
        if child.process.poll() is not None:
            raise RuntimeError(f"barrage up exited with {child.process.returncode}:\n{child.log()}")
        wait_for(lambda: "assigned" in child.log(), 60, "the dispatcher's partitions", 0.2)
        child.remember_descendants()
        yield stack
    finally:
        stack.stop()


@contextlib.contextmanager
def work_dir(prefix: str) -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


# -- HTTP client ------------------------------------------------------------------------------


class KeepAlive:
    """One HTTP/1.1 keep-alive connection (one per thread), reconnecting when the server closed it."""

    def __init__(self, url: str, timeout_s: float = 60.0) -> None:
        host_port = url.split("//", 1)[1].split("/", 1)[0]
        host, _, port = host_port.partition(":")
        self.host, self.port, self.timeout_s = host, int(port or 80), timeout_s
        self._connection: http.client.HTTPConnection | None = None

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self._connection is None:
                self._connection = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout_s)
            try:
                self._connection.request(method, path, body=body, headers=headers or {})
                response = self._connection.getresponse()
                data = response.read()
                if response.getheader("connection", "").lower() == "close":
                    self.close()
                return response.status, data
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.close()
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def run_threads(count: int, target: Callable[[int], None]) -> float:
    """Run ``target(index)`` on ``count`` threads; the wall time in seconds."""
    errors: list[BaseException] = []

    def guarded(index: int) -> None:
        try:
            target(index)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=guarded, args=(i,), daemon=True) for i in range(count)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    if errors:
        raise errors[0]
    return elapsed


# -- profiling --------------------------------------------------------------------------------


def py_spy() -> str | None:
    candidate = Path(sys.executable).parent / "py-spy"
    return str(candidate) if candidate.exists() else shutil.which("py-spy")


def profile_pids(pids: dict[str, int], seconds: float, out_dir: Path) -> dict[str, subprocess.Popen[bytes]]:
    """Start ``py-spy record`` (raw collapsed stacks) on each pid; returns the recorders."""
    tool = py_spy()
    if tool is None:
        return {}
    recorders = {}
    for name, pid in pids.items():
        recorders[name] = subprocess.Popen(
            [tool, "record", "--pid", str(pid), "--duration", str(max(1, int(seconds))), "--rate", "200",
             "--format", "raw", "--nonblocking", "--output", str(out_dir / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
    return recorders


def summarise_profile(path: Path, top: int = 8) -> list[tuple[str, float, float]]:
    """(frame, self %, inclusive %) of the busiest frames in a py-spy raw file, idle waits left out."""
    self_counts: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    idle = ("wait (threading", "select (selectors", "_worker (concurrent", "accept (socket", "poll (selectors",
            "sleep", "readinto (socket", "get (queue", "consume (", "wait (gunicorn", "run_for_one",
            "murder_keepalived", "recv_into", "_wait_for_tstate_lock", "acquire")
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = stack.split(";")
        leaf = frames[-1]
        if any(marker in leaf for marker in idle):
            continue
        count = int(count_text)
        total += count
        self_counts[_short(leaf)] += count
        for frame in {_short(f) for f in frames}:
            inclusive[frame] += count
    if not total:
        return []
    return [(frame, 100 * n / total, 100 * inclusive[frame] / total) for frame, n in self_counts.most_common(top)]


def _short(frame: str) -> str:
    # "name (path/to/module.py:123)" -> "name (module.py)"
    name, _, where = frame.partition(" (")
    file = where.rsplit(":", 1)[0].rsplit("/", 1)[-1].rstrip(")")
    return f"{name} ({file})" if file else name
