"""Runs the local stack's processes: health waits, prefixed logs, restarts, clean stop."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import IO

COLOURS = ("\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[31m")
RESET = "\x1b[0m"


class StackError(RuntimeError):
    """A stack that cannot start; the message is one line for the terminal."""


@dataclass
class ChildSpec:
    name: str
    argv: Sequence[str]
    env: Mapping[str, str] = field(default_factory=dict)
    health_url: str | None = None
    # For children without an HTTP health endpoint (the broker): True once usable.
    ready: Callable[[], bool] | None = None
    # Checked before start: a port in use is a clear error instead of a confusing crash.
    ports: Sequence[int] = ()
    restart: bool = True
    startup_timeout_s: float = 30.0
    # gunicorn drains open requests on SIGTERM, which waits out Server-Sent Event streams;
    # SIGINT is its quick shutdown.
    stop_signal: int = signal.SIGTERM


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        if not alive():
            raise StackError(f"exited before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
                last = f"HTTP {response.status}"
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return
            last = f"HTTP {exc.code}"
        except (OSError, urllib.error.URLError) as exc:
            last = str(exc)
        time.sleep(0.1)
    raise StackError(f"{url} did not answer within {timeout_s:.0f} s ({last})")


def wait_ready(ready: Callable[[], bool], timeout_s: float, alive: Callable[[], bool] = lambda: True) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise StackError("exited before it was ready")
        if ready():
            return
        time.sleep(0.1)
    raise StackError(f"not ready within {timeout_s:.0f} s")


class Child:
    def __init__(self, spec: ChildSpec, colour: str, out: IO[str]) -> None:
        self.spec = spec
        self.colour = colour
        self.out = out
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    def start(self) -> None:
        env = {**os.environ, **self.spec.env, "PYTHONUNBUFFERED": "1"}
        self.process = subprocess.Popen(
            list(self.spec.argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True,
        )
        threading.Thread(target=self._pump, args=(self.process,), daemon=True).start()

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        prefix = f"{self.colour}{self.spec.name:>10} |{RESET} " if self.out.isatty() else f"{self.spec.name:>10} | "
        for raw in process.stdout:
            self.out.write(prefix + raw.decode("utf-8", "replace"))
            self.out.flush()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        process = self.process
        if process is None or process.poll() is not None:
            return
        try:
            os.killpg(process.pid, self.spec.stop_signal)
        except ProcessLookupError:
            return
        try:
            process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


class Supervisor:
    """Starts children in order, each healthy before the next; restarts any that dies."""

    def __init__(self, specs: Sequence[ChildSpec], out: IO[str] = sys.stdout, max_restarts: int = 20) -> None:
        self.children = [Child(spec, COLOURS[i % len(COLOURS)], out) for i, spec in enumerate(specs)]
        self.out = out
        self.max_restarts = max_restarts
        self._stopping = threading.Event()

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    def start(self) -> None:
        for child in self.children:
            for port in child.spec.ports:
                if not port_is_free("127.0.0.1", port):
                    raise StackError(f"port {port} (for {child.spec.name}) is already in use; choose another")
        try:
            for child in self.children:
                self._start_one(child)
        except BaseException:
            self.stop()
            raise

    def _start_one(self, child: Child) -> None:
        child.start()
        try:
            if child.spec.health_url:
                wait_healthy(child.spec.health_url, child.spec.startup_timeout_s, child.alive)
            if child.spec.ready is not None:
                wait_ready(child.spec.ready, child.spec.startup_timeout_s, child.alive)
        except StackError as exc:
            raise StackError(f"{child.spec.name}: {exc}") from None

    def watch(self, poll_s: float = 0.5) -> None:
        """Restart children that die, until ``stop`` is called."""
        while not self._stopping.wait(poll_s):
            for child in self.children:
                if self._stopping.is_set() or child.alive() or not child.spec.restart:
                    continue
                code = child.process.returncode if child.process else None
                if child.restarts >= self.max_restarts:
                    self.out.write(f"{child.spec.name} exited ({code}) too often; not restarting\n")
                    child.spec.restart = False
                    continue
                child.restarts += 1
                self.out.write(f"{child.spec.name} exited ({code}); restart {child.restarts}\n")
                time.sleep(min(0.2 * child.restarts, 3.0))
                try:
                    self._start_one(child)
                except StackError as exc:
                    self.out.write(f"{exc}\n")

    def stop(self) -> None:
        self._stopping.set()
        for child in reversed(self.children):
            child.stop()
