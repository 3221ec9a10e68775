"""Runs the local stack's processes: health waits, prefixed logs, restarts, a bounded stop.

Nothing outlives the supervisor. Each child leads its own process group (and session, so the
terminal's signals reach only the supervisor), gets SIGKILL from the kernel when the supervisor
dies however it dies (Linux's parent-death signal), and a guard process (``local.guard``) kills
the children's whole groups when the supervisor vanishes without stopping them. A stop sends
each child its stop signal, waits for all of them against one deadline, then SIGKILLs the
process groups still alive, whatever their clients hold open.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from local import processes
from local.runfile import TOKEN_ENV, RunProcess, RunRecord, remove_run_file, write_run_file

COLOURS = ("\x1b[36m", "\x1b[35m", "\x1b[33m", "\x1b[32m", "\x1b[34m", "\x1b[31m")
RESET = "\x1b[0m"
# From the stop request (the signal) to every process gone; the children's graceful stops get
# KILL_AFTER_S of it, the rest is for SIGKILL and the supervisor's own exit.
STOP_TIMEOUT_S = 3.0
KILL_AFTER_S = 2.0


class StackError(RuntimeError):
    """A stack that cannot start; the message is one line for the terminal."""


class PortsBusy(StackError):
    """Ports the stack needs are held by other processes (named in the message)."""


class StackInterrupted(Exception):
    """A stop was requested (a signal) while the stack was starting."""


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
    # Sent to the child's whole process group on stop; the group gets SIGKILL at the deadline.
    # A server drains open requests on SIGTERM, which waits out Server-Sent Event streams (the
    # stack gives its servers one second for that: SERVER_GRACEFUL_TIMEOUT_S); SIGINT is Tansu's
    # quick shutdown.
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
        self.identity: str | None = None
        self.restarts = 0

    @property
    def group(self) -> int | None:
        """The child's process group id: it leads its own, so this is its pid."""
        return self.process.pid if self.process is not None else None

    def start(self, extra_env: Mapping[str, str]) -> None:
        """Spawn the child. Call from a thread that lives as long as the supervisor: the
        parent-death signal fires when the spawning *thread* ends."""
        env = {**os.environ, **self.spec.env, **extra_env, "PYTHONUNBUFFERED": "1"}
        try:
            self.process = subprocess.Popen(
                list(self.spec.argv), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=processes.parent_death_signal(signal.SIGKILL),
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise StackError(f"{self.spec.name}: cannot run {self.spec.argv[0]}: {exc}") from None
        self.identity = processes.identity(self.process.pid)
        threading.Thread(target=self._pump, args=(self.process,), name=f"pump-{self.spec.name}", daemon=True).start()

    def _pump(self, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        try:
            tty = self.out.isatty()
        except (OSError, ValueError):
            tty = False
        prefix = f"{self.colour}{self.spec.name:>10} |{RESET} " if tty else f"{self.spec.name:>10} | "
        writable = True
        for raw in process.stdout:
            if not writable:
                continue  # keep draining, or the child blocks on a full pipe
            try:
                self.out.write(prefix + raw.decode("utf-8", "replace"))
                self.out.flush()
            except (OSError, ValueError):  # the terminal closed (EIO), a pipe reader left (EPIPE)
                writable = False

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def send_stop(self) -> None:
        if self.group is not None:
            processes.kill_group(self.group, self.spec.stop_signal)

    def kill(self) -> None:
        if self.group is not None:
            processes.kill_group(self.group, signal.SIGKILL)


@dataclass(frozen=True)
class StopReport:
    elapsed_s: float
    stopped: tuple[str, ...] = ()  # children that were running, in the order they were signalled
    killed: tuple[str, ...] = ()  # those whose process group still ran at the deadline: SIGKILL
    kill_after_s: float = KILL_AFTER_S
    surviving: tuple[str, ...] = ()  # still had processes after SIGKILL (unkillable: D state)
    gone_after_s: Mapping[str, float] = field(default_factory=dict)  # per child, from the stop's start

    def summary(self) -> str:
        if not self.stopped:
            return "stopped (nothing was running)"
        text = f"stopped {', '.join(self.stopped)} in {self.elapsed_s:.1f} s"
        if self.killed:
            text += f"; needed SIGKILL after {self.kill_after_s:.1f} s: {', '.join(self.killed)}"
        if self.surviving:
            text += f"; STILL RUNNING after SIGKILL: {', '.join(self.surviving)}"
        return text


class GuardLink:
    """The supervisor's end of ``local.guard``: tells it which process groups to kill if the
    supervisor dies; end of the pipe (the supervisor's death) is what sets it off."""

    def __init__(self, token: str, run_file: Path | None) -> None:
        argv = [sys.executable, "-m", "local.guard", "--token", token]
        if run_file is not None:
            argv += ["--run-file", str(run_file)]
        self._lock = threading.Lock()
        self.process: subprocess.Popen[bytes] | None = None
        self.identity: str | None = None
        try:
            # Its own session: the terminal's Ctrl-C and hang-up are not for it.
            self.process = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                            start_new_session=True, env={**os.environ, TOKEN_ENV: token})
            self.identity = processes.identity(self.process.pid)
        except OSError:
            self.process = None

    def _send(self, line: str) -> None:
        with self._lock:
            process = self.process
            if process is None or process.stdin is None:
                return
            try:
                process.stdin.write(line.encode() + b"\n")
                process.stdin.flush()
            except (OSError, ValueError):  # it died: the parent-death signal still covers the children
                self.process = None

    def watch(self, group: int, identity: str | None) -> None:
        self._send(f"watch {group} {identity or '-'}")

    def forget(self, group: int) -> None:
        self._send(f"forget {group}")

    def done(self) -> None:
        """A clean stop: the guard exits without touching anything."""
        process = self.process
        self._send("done")
        if process is not None:
            try:
                if process.stdin is not None:
                    process.stdin.close()
                process.wait(2)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
        self.process = None


class Supervisor:
    """Starts children in order, each healthy before the next; restarts any that dies.

    ``request_stop`` only sets a flag (safe in a signal handler); ``watch`` and ``start`` notice
    it, and ``stop`` does the stopping. Call ``start``, ``watch`` and ``stop`` from the main
    thread (or one that lives as long as the supervisor): children are spawned from there.
    """

    def __init__(
        self,
        specs: Sequence[ChildSpec],
        out: IO[str] = sys.stdout,
        max_restarts: int = 20,
        run_file: Path | None = None,
        stop_timeout_s: float = STOP_TIMEOUT_S,
        kill_after_s: float = KILL_AFTER_S,
        guard: bool = True,
    ) -> None:
        self.children = [Child(spec, COLOURS[i % len(COLOURS)], out) for i, spec in enumerate(specs)]
        self.out = out
        self.max_restarts = max_restarts
        self.run_file = run_file
        self.stop_timeout_s = stop_timeout_s
        self.kill_after_s = min(kill_after_s, stop_timeout_s)
        self.token = uuid.uuid4().hex
        self.use_guard = guard
        self.guard: GuardLink | None = None
        self.requested_signal: int | None = None
        self.requested_at: float | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._report: StopReport | None = None

    def child(self, name: str) -> Child:
        return next(c for c in self.children if c.spec.name == name)

    @property
    def stopping(self) -> bool:
        return self.requested_signal is not None or self._stopping.is_set()

    def request_stop(self, signum: int = signal.SIGTERM) -> None:
        """Ask for a stop; only assigns attributes, so a signal handler may call it. The stop's
        deadline counts from here."""
        if self.requested_at is None:
            self.requested_at = time.monotonic()
        self.requested_signal = signum

    def _say(self, line: str) -> None:
        try:
            self.out.write(line + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass

    def check_ports(self) -> None:
        busy = [(port, child.spec.name) for child in self.children for port in child.spec.ports
                if not port_is_free("127.0.0.1", port)]
        if busy:
            held = "; ".join(f"port {port} (for {name}) is already in use by "
                             f"{processes.describe_holders(processes.port_holders(port))}" for port, name in busy)
            advice = "stop it or choose another port" if len(busy) == 1 else "stop them or choose other ports"
            raise PortsBusy(f"{held}; {advice}")

    def start(self) -> None:
        """Start every child, each healthy before the next; on failure, stop what started.

        Raises StackError (the stack cannot run) or StackInterrupted (``request_stop``)."""
        self.check_ports()
        try:
            if self.use_guard:
                self.guard = GuardLink(self.token, self.run_file)
            self._write_run_file()
            for child in self.children:
                self._start_one(child)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, child: Child) -> None:
        with self._lock:  # not while ``stop`` runs: it would miss this child
            if self.stopping:
                raise StackInterrupted
            child.start({TOKEN_ENV: self.token})
            if self.guard is not None and child.group is not None:
                self.guard.watch(child.group, child.identity)
            self._write_run_file()

    def _start_one(self, child: Child) -> None:
        self._spawn(child)

        def alive() -> bool:
            return child.alive() and not self.stopping

        try:
            if child.spec.health_url:
                wait_healthy(child.spec.health_url, child.spec.startup_timeout_s, alive)
            if child.spec.ready is not None:
                wait_ready(child.spec.ready, child.spec.startup_timeout_s, alive)
        except StackError as exc:
            if self.stopping:
                raise StackInterrupted from None
            raise StackError(f"{child.spec.name}: {exc}") from None

    def _record(self) -> RunRecord:
        children = tuple(RunProcess(c.spec.name, c.process.pid, c.identity, tuple(c.spec.ports))
                         for c in self.children if c.process is not None)
        guard = None
        if self.guard is not None and self.guard.process is not None:
            guard = RunProcess("guard", self.guard.process.pid, self.guard.identity)
        return RunRecord(self.token, RunProcess("supervisor", os.getpid(), processes.identity(os.getpid())),
                         children, guard)

    def _write_run_file(self) -> None:
        if self.run_file is None:
            return
        try:
            write_run_file(self.run_file, self._record())
        except OSError as exc:
            self._say(f"cannot write the run file {self.run_file}: {exc}")

    def _clear_leftovers(self, child: Child) -> None:
        """SIGKILL what a dead child left in its group (a worker holding the port), then forget it."""
        group = child.group
        if group is None:
            return
        if group in processes.live_groups([group]):
            processes.kill_group(group)
        if self.guard is not None:
            self.guard.forget(group)

    def watch(self, poll_s: float = 0.5) -> None:
        """Restart children that die, until ``stop`` or ``request_stop``."""
        while not self.stopping:
            slept = 0.0
            while slept < poll_s and not self.stopping:  # short steps: a signal only sets a flag
                step = min(0.1, poll_s - slept)
                self._stopping.wait(step)
                slept += step
            for child in self.children:
                if self.stopping:
                    return
                if child.alive() or not child.spec.restart:
                    continue
                code = child.process.returncode if child.process else None
                if child.restarts >= self.max_restarts:
                    self._say(f"{child.spec.name} exited ({code}) too often; not restarting")
                    child.spec.restart = False
                    continue
                child.restarts += 1
                self._say(f"{child.spec.name} exited ({code}); restart {child.restarts}")
                self._clear_leftovers(child)
                time.sleep(min(0.2 * child.restarts, 3.0))
                try:
                    self._start_one(child)
                except StackInterrupted:
                    return
                except StackError as exc:
                    self._say(str(exc))

    @staticmethod
    def _wait_groups(children: Sequence[Child], deadline: float, begin: float,
                     gone_after: dict[str, float]) -> list[Child]:
        """Wait until each child's whole process group is gone, or ``deadline``; those left.
        ``gone_after`` gets, per child, the seconds from ``begin`` until its group was gone."""
        pending = list(children)
        while True:
            exited = [c for c in pending if not c.alive()]
            live = processes.live_groups([c.group for c in exited if c.group is not None]) if exited else set()
            now = time.monotonic()
            for child in exited:
                if child.group not in live:
                    gone_after[child.spec.name] = now - begin
            pending = [c for c in pending if c.alive() or c.group in live]
            if not pending or now >= deadline:
                return pending
            time.sleep(0.02)

    def stop(self) -> StopReport:
        """Stop every child: its stop signal, SIGKILL of the process groups still alive at
        ``kill_after_s``, all within ``stop_timeout_s`` of the request. Idempotent: later calls
        return the first report."""
        with self._lock:
            if self._report is not None:
                return self._report
            self._stopping.set()
            begin = min(time.monotonic(), self.requested_at or float("inf"))
            kill_after = self.kill_after_s
            groups = [c.group for c in self.children if c.group is not None]
            live = processes.live_groups(groups)
            running = [c for c in reversed(self.children) if c.alive() or c.group in live]
            for child in running:
                child.send_stop()
            gone_after: dict[str, float] = {}
            late = self._wait_groups(running, begin + kill_after, begin, gone_after)
            for child in late:
                child.kill()
            surviving = self._wait_groups(late, begin + self.stop_timeout_s, begin, gone_after)
            for child in self.children:
                if child.process is not None and child.process.poll() is None:
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        child.process.wait(max(0.0, begin + self.stop_timeout_s - time.monotonic()))
            if self.guard is not None:
                self.guard.done()
            if self.run_file is not None and not surviving:
                remove_run_file(self.run_file, self.token)
            self._report = StopReport(
                elapsed_s=time.monotonic() - begin,
                stopped=tuple(c.spec.name for c in running),
                killed=tuple(c.spec.name for c in late),
                kill_after_s=kill_after,
                surviving=tuple(c.spec.name for c in surviving),
                gone_after_s=gone_after,
            )
            return self._report
