"""``barrage up`` stops all of itself: on a closed terminal, on Ctrl-C under load, when killed
outright, and when a new ``barrage up`` finds it still running. After each, no process of the
stack remains (its run file's pids and process groups, and every process carrying its token)
and its ports can be bound again.
"""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import select
import signal
import socket
import subprocess
import sys
import termios
import threading
import time
from pathlib import Path

import pytest

from local.runfile import RunRecord, live_processes, read_run_file
from local.supervisor import STOP_TIMEOUT_S, free_port
from tests.e2e.stack_support import (
    ROOT,
    Stack,
    assert_all_gone,
    kill_leftovers,
    request_json,
    stack_argv,
    stack_env,
    start_stack,
)
from tests.waiting import wait_for

pytestmark = pytest.mark.e2e
SUMMARY = re.compile(r"^stopped (?P<who>.+) in (?P<seconds>\d+\.\d) s"
                     r"(?:; needed SIGKILL after [\d.]+ s: (?P<killed>.+))?$", re.MULTILINE)


def free_ports() -> dict[str, int]:
    return {name: free_port() for name in ("homepage", "processor", "broker", "tablestore")}


def open_stream(port: int, room: str, timeout_s: float = 20) -> socket.socket:
    """GET /api/stream held open, once the HomePage answered 200 and started the event stream."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=timeout_s)
    connection.sendall(f"GET /api/stream?room={room} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                       "Accept: text/event-stream\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = connection.recv(4096)
        assert chunk, f"the stream closed early: {head!r}"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head[:200]
    return connection


def summary_of(log: str) -> re.Match[str]:
    found = SUMMARY.search(log)
    assert found, f"no stop summary in:\n{log[-3000:]}"
    return found


def grandchildren(record: RunRecord) -> list[int]:
    """Processes of the run that none of the supervisor's own children are: workers, Tansu."""
    own = {record.supervisor.pid, *(c.pid for c in record.children)}
    if record.guard:
        own.add(record.guard.pid)
    return [p.pid for p in live_processes(record) if p.pid not in own]


def test_closing_the_terminal_stops_the_whole_stack(tmp_path: Path) -> None:
    ports = free_ports()
    master, terminal = pty.openpty()

    def in_the_terminal() -> None:  # a session whose controlling terminal is the pty, as in a shell
        os.setsid()
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)

    process = subprocess.Popen(stack_argv(tmp_path / "data", ports), cwd=ROOT, env=stack_env(), stdin=terminal,
                               stdout=terminal, stderr=terminal, preexec_fn=in_the_terminal)
    os.close(terminal)
    output = bytearray()
    reading = threading.Event()
    reading.set()

    def read() -> None:
        while reading.is_set():
            if select.select([master], [], [], 0.1)[0]:
                try:
                    chunk = os.read(master, 65536)
                except OSError:
                    return
                if not chunk:
                    return
                output.extend(chunk)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    record = None
    try:
        wait_for(lambda: b"Ctrl-C stops everything" in output or process.poll() is not None, 90, "the stack")
        assert process.poll() is None, output.decode(errors="replace")
        record = read_run_file(tmp_path / "data" / "stack.json")
        assert record is not None and grandchildren(record)
        stream = open_stream(ports["homepage"], "hangup")
        reading.clear()
        reader.join(5)
        began = time.monotonic()
        os.close(master)  # the terminal window closes: the kernel hangs up the session (SIGHUP)
        assert process.wait(15) == 0
        print(json.dumps({"hangup_to_exit_s": round(time.monotonic() - began, 2)}))
        assert_all_gone(record, ports)
        assert not (tmp_path / "data" / "stack.json").exists()
        stream.close()
    finally:
        if process.poll() is None:
            process.kill()
        if record is not None:
            kill_leftovers(record)


def test_a_killed_supervisor_leaves_nothing_behind(tmp_path: Path) -> None:
    stack = start_stack(tmp_path, wait_dispatcher=False)
    record = stack.record()
    try:
        # A worker serving a stream does not end with its arbiter by itself: it must be killed.
        stream = open_stream(stack.ports["homepage"], "killed")
        assert grandchildren(record), "expected the servers' workers and Tansu"
        began = time.monotonic()
        stack.process.kill()  # the IDE's stop button, the OOM killer
        stack.process.wait(10)
        assert_all_gone(record, stack.ports)
        print(json.dumps({"sigkill_to_all_gone_s": round(time.monotonic() - began, 2)}))
        wait_for(lambda: not stack.run_file.exists(), 5, "the guard to remove the run file")
        stream.close()
    finally:
        stack.stop()
        kill_leftovers(record)


def test_ctrl_c_with_100_streams_and_a_load_run_in_flight_stops_within_the_deadline(tmp_path: Path) -> None:
    env = stack_env(THREADS="128", BARRAGE_MAX_STREAMS="100")  # room for 100 streams on the HomePage
    stack = start_stack(tmp_path, env=env, own_session=True, wait_dispatcher=False)
    record = stack.record()
    held: list[socket.socket] = []
    try:
        port = stack.ports["homepage"]
        held.extend(open_stream(port, f"ctrl-c-{i % 5}") for i in range(100))
        for _ in range(10):  # half-open: a request that never finishes its headers
            half = socket.create_connection(("127.0.0.1", port), timeout=5)
            half.sendall(b"GET /api/stream?room=x HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            held.append(half)
        status, run = request_json(f"{stack.url}/api/load",
                                   {"message": "load during stop", "concurrency": 8, "duration": 30, "room": "stop"})
        assert status == 202, run
        wait_for(lambda: request_json(f"{stack.url}/api/load/{run['id']}")[1]["sent"] > 0, 20,
                 "the load run to be sending")
        began = time.monotonic()
        os.killpg(stack.process.pid, signal.SIGINT)  # Ctrl-C: the terminal signals the foreground group
        assert stack.process.wait(15) == 0
        wall_s = time.monotonic() - began
        summary = summary_of(stack.log())
        print(json.dumps({"ctrl_c_to_exit_s": round(wall_s, 2), "summary": summary.group(0)}))
        assert float(summary["seconds"]) <= STOP_TIMEOUT_S
        assert wall_s < STOP_TIMEOUT_S + 2  # plus the supervisor's own exit, on a busy machine
        assert set(summary["who"].split(", ")) == {c.name for c in record.children}
        assert_all_gone(record, stack.ports)
    finally:
        for connection in held:
            connection.close()
        stack.stop()
        kill_leftovers(record)


def test_a_new_up_stops_the_stack_still_running_on_its_data_dir(tmp_path: Path) -> None:
    first = start_stack(tmp_path, wait_dispatcher=False, log_name="first.log")
    first_record = first.record()
    second: Stack | None = None
    try:
        second = start_stack(tmp_path, ports=first.ports, wait_dispatcher=False, log_name="second.log")
        assert f"barrage up: stopping the previous stack recorded in {first.run_file} (supervisor pid " \
               f"{first.process.pid}, " in second.log()
        assert first.process.wait(10) == 0
        assert_all_gone(first_record, None)  # the second stack has its ports now
        assert second.record().token != first_record.token
        assert request_json(f"{second.url}/healthz")[0] == 200
        second_record = second.record()
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(15) == 0
        summary_of(second.log())
        assert_all_gone(second_record, second.ports)
    finally:
        first.stop()
        kill_leftovers(first_record)
        if second is not None:
            second.stop()
            with_record = read_run_file(second.run_file)
            if with_record is not None:
                kill_leftovers(with_record)


def test_a_port_held_by_another_process_is_one_line_naming_it(tmp_path: Path) -> None:
    ports = free_ports()
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", 0))
        squatter.listen()
        ports["homepage"] = squatter.getsockname()[1]
        done = subprocess.run(stack_argv(tmp_path / "data", ports), cwd=ROOT, env=stack_env(), capture_output=True,
                              text=True, timeout=60, stdin=subprocess.DEVNULL)
    lines = (done.stdout + done.stderr).strip().splitlines()
    assert done.returncode == 1, lines
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"barrage up: port {ports['homepage']} (for homepage) is already in use by "
                               f"pid {os.getpid()} ({Path(sys.executable).name}"), lines
    assert not (tmp_path / "data" / "stack.json").exists()  # nothing was started
