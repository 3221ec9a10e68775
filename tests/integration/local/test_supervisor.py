"""The supervisor of ``barrage up``: health waits, restarts, clean stop, busy ports."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from local import processes
from local.runfile import TOKEN_ENV, live_processes, read_run_file
from local.supervisor import (
    ChildSpec,
    PortsBusy,
    StackError,
    StackInterrupted,
    Supervisor,
    free_port,
    port_is_free,
)
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]

SERVE = (
    "import http.server, sys; "
    "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), http.server.SimpleHTTPRequestHandler)"
    ".serve_forever()"
)


def test_starts_healthy_restarts_a_dead_child_and_stops_everything() -> None:
    port = free_port()
    out = io.StringIO()
    spec = ChildSpec("web", [sys.executable, "-c", SERVE, str(port)], health_url=f"http://127.0.0.1:{port}/",
                     ports=(port,))
    supervisor = Supervisor([spec], out=out)
    supervisor.start()
    watcher = threading.Thread(target=supervisor.watch, args=(0.05,), daemon=True)
    watcher.start()
    try:
        child = supervisor.child("web")
        first = child.process
        assert first is not None and child.alive()
        first.kill()
        wait_for(lambda: child.process is not first and child.alive())
        assert child.restarts == 1
        assert "web exited" in out.getvalue()
    finally:
        supervisor.stop()
        watcher.join(5)
    assert not supervisor.child("web").alive()


def test_a_busy_port_is_refused_before_anything_starts() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        supervisor = Supervisor([ChildSpec("web", [sys.executable, "-c", "pass"], ports=(port,))], out=io.StringIO())
        with pytest.raises(StackError, match=f"port {port} \\(for web\\) is already in use"):
            supervisor.start()
        assert supervisor.child("web").process is None


def test_a_child_that_dies_at_start_is_a_clear_error() -> None:
    port = free_port()
    spec = ChildSpec("broken", [sys.executable, "-c", "raise SystemExit(3)"], health_url=f"http://127.0.0.1:{port}/")
    with pytest.raises(StackError, match="broken: exited before"):
        Supervisor([spec], out=io.StringIO()).start()


def test_log_lines_are_prefixed_with_the_child_name() -> None:
    out = io.StringIO()
    spec = ChildSpec("talker", [sys.executable, "-c", "print('hello'); import time; time.sleep(30)"],
                     ready=lambda: "hello" in out.getvalue())
    supervisor = Supervisor([spec], out=out)
    supervisor.start()
    supervisor.stop()
    assert "    talker | hello" in out.getvalue()


# -- stopping: deadline, process groups, the supervisor's death ------------------------------

# A child that starts a grandchild in its own process group; each ignores the signals named in
# argv[1] ("TERM", "INT", "TERM,INT" or "-") and writes its pid to argv[2].<role>.
FAMILY = r"""
import os, signal, subprocess, sys, time
ignored, prefix = sys.argv[1], sys.argv[2]
role = sys.argv[3] if len(sys.argv) > 3 else "child"
for name in filter(None, ignored.split(",")) if ignored != "-" else ():
    signal.signal(getattr(signal, "SIG" + name), signal.SIG_IGN)
if role == "child":
    subprocess.Popen([sys.executable, "-c", sys.argv[4], sys.argv[5], prefix, "grandchild"])
with open(f"{prefix}.{role}.tmp", "w") as out:
    out.write(str(os.getpid()))
os.replace(f"{prefix}.{role}.tmp", f"{prefix}.{role}")
while True:
    time.sleep(1)
"""


def family(prefix: Path, child_ignores: str, grandchild_ignores: str) -> list[str]:
    return [sys.executable, "-c", FAMILY, child_ignores, str(prefix), "child", FAMILY, grandchild_ignores]


def pid_in(path: Path) -> int:
    return int(wait_for(lambda: path.exists() and path.read_text(), 15, str(path)))


def running(pid: int) -> bool:
    return processes.identity(pid) is not None


def test_a_child_ignoring_its_stop_signal_is_killed_with_its_group_at_the_deadline(tmp_path: Path) -> None:
    stubborn, polite = tmp_path / "stubborn", tmp_path / "polite"
    supervisor = Supervisor([
        ChildSpec("stubborn", family(stubborn, "TERM", "TERM"), ready=(tmp_path / "stubborn.grandchild").exists),
        ChildSpec("polite", family(polite, "-", "-"), ready=(tmp_path / "polite.grandchild").exists),
    ], out=io.StringIO(), stop_timeout_s=2.0, kill_after_s=0.8)
    supervisor.start()
    pids = [pid_in(tmp_path / f"{name}.{role}") for name in ("stubborn", "polite") for role in ("child", "grandchild")]
    report = supervisor.stop()
    assert report.killed == ("stubborn",)
    assert report.stopped == ("polite", "stubborn")  # the reverse of the start order
    assert 0.8 <= report.elapsed_s < 2.0
    assert report.gone_after_s["polite"] < 0.8
    assert "needed SIGKILL after 0.8 s: stubborn" in report.summary()
    assert not any(running(pid) for pid in pids)
    assert supervisor.stop() is report  # idempotent


def test_what_a_stopped_child_leaves_in_its_group_is_killed(tmp_path: Path) -> None:
    # The child obeys SIGTERM, its grandchild does not: a server worker still holding a stream.
    prefix = tmp_path / "server"
    supervisor = Supervisor([ChildSpec("server", family(prefix, "-", "TERM"),
                                       ready=(tmp_path / "server.grandchild").exists)],
                            out=io.StringIO(), stop_timeout_s=2.0, kill_after_s=0.8)
    supervisor.start()
    child, grandchild = pid_in(tmp_path / "server.child"), pid_in(tmp_path / "server.grandchild")
    report = supervisor.stop()
    assert report.killed == ("server",)
    assert not running(child) and not running(grandchild)


def test_the_run_file_records_each_child_and_goes_with_a_clean_stop(tmp_path: Path) -> None:
    port = free_port()
    run_file = tmp_path / "stack.json"
    spec = ChildSpec("web", [sys.executable, "-c", SERVE, str(port)], health_url=f"http://127.0.0.1:{port}/",
                     ports=(port,))
    supervisor = Supervisor([spec], out=io.StringIO(), run_file=run_file)
    supervisor.start()
    try:
        record = read_run_file(run_file)
        assert record is not None and record.token == supervisor.token
        assert record.supervisor.pid == os.getpid() and record.supervisor.running()
        [web] = record.children
        process = supervisor.child("web").process
        assert process is not None and (web.name, web.pid, web.ports) == ("web", process.pid, (port,))
        assert web.running() and os.getpgid(web.pid) == web.pid  # it leads its own group
        assert record.guard is not None and record.guard.running()
        assert processes.has_environ(web.pid, TOKEN_ENV, supervisor.token)
    finally:
        report = supervisor.stop()
    assert report.stopped == ("web",) and not report.killed
    assert not run_file.exists()
    assert not record.guard.running()  # told "done", it left
    assert port_is_free("127.0.0.1", port)


def test_a_busy_port_names_the_process_that_holds_it() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        supervisor = Supervisor([ChildSpec("web", [sys.executable, "-c", "pass"], ports=(port,))], out=io.StringIO())
        with pytest.raises(PortsBusy) as caught:
            supervisor.start()
    assert f"port {port} (for web) is already in use by pid {os.getpid()} (" in str(caught.value)
    assert str(caught.value).endswith("; stop it or choose another port")
    assert "\n" not in str(caught.value)


def test_a_stop_requested_while_starting_ends_what_had_started(tmp_path: Path) -> None:
    first = tmp_path / "first"
    supervisor = Supervisor([
        ChildSpec("first", family(first, "-", "-"), ready=(tmp_path / "first.grandchild").exists),
        ChildSpec("never-ready", [sys.executable, "-c", "import time; time.sleep(60)"], ready=lambda: False),
    ], out=io.StringIO())
    threading.Timer(1.0, supervisor.request_stop, args=(signal.SIGINT,)).start()  # as a signal handler would
    with pytest.raises(StackInterrupted):
        supervisor.start()
    never = supervisor.child("never-ready").process
    assert never is not None and never.poll() is not None
    assert not running(pid_in(tmp_path / "first.child")) and not running(pid_in(tmp_path / "first.grandchild"))


class ClosedTerminal(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError(5, "Input/output error")  # what a hung-up terminal answers


def test_a_closed_terminal_does_not_block_a_chatty_child(tmp_path: Path) -> None:
    done = tmp_path / "done"
    chatty = (f"import time\nfor _ in range(4000): print('x' * 100)\nopen({str(done)!r}, 'w').close()\n"
              "time.sleep(60)")
    supervisor = Supervisor([ChildSpec("chatty", [sys.executable, "-c", chatty], ready=done.exists,
                                       startup_timeout_s=10)], out=ClosedTerminal())
    supervisor.start()  # 400 KB through a 64 KB pipe: only if its output is drained
    supervisor.stop()


SUPERVISOR_SCRIPT = r"""
import sys
from pathlib import Path
from local.supervisor import ChildSpec, Supervisor
prefix, run_file, family = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:]
supervisor = Supervisor([ChildSpec("family", family, ready=lambda: Path(f"{prefix}.grandchild").exists())],
                        run_file=run_file)
supervisor.start()
print("started", flush=True)
supervisor.watch()
"""


def test_children_and_grandchildren_die_when_the_supervisor_is_killed(tmp_path: Path) -> None:
    prefix, run_file = tmp_path / "fam", tmp_path / "stack.json"
    # Both ignore SIGTERM and SIGHUP: nothing but the kernel's signal and the guard can end them.
    argv = [sys.executable, "-c", SUPERVISOR_SCRIPT, str(prefix), str(run_file),
            *family(prefix, "TERM,HUP", "TERM,HUP")]
    supervisor = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=ROOT)
    record = None
    try:
        assert supervisor.stdout is not None
        assert b"started" in supervisor.stdout.readline()
        record = read_run_file(run_file)
        assert record is not None
        child, grandchild = pid_in(tmp_path / "fam.child"), pid_in(tmp_path / "fam.grandchild")
        assert {p.pid for p in live_processes(record)} >= {supervisor.pid, child, grandchild}
        supervisor.kill()
        supervisor.wait(5)
        wait_for(lambda: not running(child) and not running(grandchild), 5, "the children to die with it")
        wait_for(lambda: not live_processes(record), 5, "every process of the run to be gone")
        wait_for(lambda: not run_file.exists(), 5, "the guard to remove the run file")
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
        for leftover in live_processes(record) if record is not None else ():  # a failed run leaves no orphan
            processes.kill_process(leftover.pid)
