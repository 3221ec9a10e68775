"""The supervisor of ``barrage up``: health waits, restarts, clean stop, busy ports."""

from __future__ import annotations

import io
import socket
import sys
import threading

import pytest

from local.supervisor import ChildSpec, StackError, Supervisor, free_port
from tests.waiting import wait_for

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
