"""``/healthz`` while 300 half-open connections are held (issue 14: "answers within 100 ms").

The HomePage runs exactly as ``barrage up`` starts it (argv and environment from local.stack:
functions-framework's ASGI app under ``functions.serve``, one worker, the default limits; the
in-process bus, as ``/healthz`` touches neither Kafka nor the store). First
``--probes`` health probes with nothing else open (the yardstick of the same server, same run),
then ``--connections`` connections each send half a request (the request line and one header,
never the blank line), half of them trickling one more header byte every second as slowloris
does, and the same probes run while they are held. A probe is what a platform's prober does: a
new connection, ``GET /healthz``, the whole answer read; its latency is from connect to the last
byte. Every half-open connection is then watched until the server closes it: after how long, and
with what (408, or nothing). The target is met when no probe fails and their p99 is at most
100 ms (the max is reported too: on this shared machine even idle probes pass 100 ms at times).

For contrast (not a target): the same half-open connections against a do-nothing function on
functions-framework's default server (Flask under gunicorn gthread), with ``--yardstick-probes``
probes of ``--yardstick-timeout`` s each.

    .venv/bin/python bench/half_open.py [--connections 300] [--probes 300] [--yardstick-probes 5]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import selectors
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import emit_json, median, work_dir
from homepage import homepage, yardstick

from functions.loadrun import percentile  # the one nearest-rank definition

TARGET_MS = 100.0
HALF_REQUEST = b"GET /api/barrages?room=slow HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow-%d: "


@dataclass
class HalfOpen:
    sock: socket.socket
    trickles: bool
    opened: float
    closed_after_s: float | None = None
    answer: bytes = b""


@dataclass
class Held:
    """Half-open connections, watched on one thread: the trickling ones get a byte a second."""

    connections: list[HalfOpen]
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None

    def open_count(self) -> int:
        return sum(1 for c in self.connections if c.closed_after_s is None)

    def watch(self) -> None:
        selector = selectors.DefaultSelector()
        for connection in self.connections:
            selector.register(connection.sock, selectors.EVENT_READ, connection)
        next_trickle = time.monotonic() + 1.0
        while not self.stop.is_set() and self.open_count():
            for key, _ in selector.select(timeout=0.05):
                connection = key.data
                try:
                    chunk = connection.sock.recv(65536)
                except OSError:
                    chunk = b""
                if chunk:
                    connection.answer += chunk
                    continue
                connection.closed_after_s = time.monotonic() - connection.opened
                selector.unregister(connection.sock)
            if time.monotonic() >= next_trickle:
                next_trickle += 1.0
                for connection in self.connections:
                    if connection.trickles and connection.closed_after_s is None:
                        with contextlib.suppress(OSError):  # closed by the server: the selector sees it
                            connection.sock.send(b"x")
        selector.close()

    def start(self) -> None:
        self.thread = threading.Thread(target=self.watch, name="half-open-watcher", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join(10)
        for connection in self.connections:
            connection.sock.close()


def open_half(port: int, count: int) -> Held:
    connections = []
    for n in range(count):
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(HALF_REQUEST % n)
        sock.setblocking(False)
        connections.append(HalfOpen(sock, trickles=n % 2 == 1, opened=time.monotonic()))
    return Held(connections)


def probe(port: int, timeout_s: float) -> float | None:
    """One health probe on a new connection: milliseconds from connect to the whole answer, None if none came."""
    began = time.perf_counter()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := sock.recv(65536):
                answer += chunk
    except OSError:
        return None
    if not answer.startswith(b"HTTP/1.1 200"):
        return None
    return (time.perf_counter() - began) * 1000


def probes(port: int, count: int, timeout_s: float, every_s: float, until: Callable[[], bool] = lambda: False,
           ) -> tuple[list[float], int]:
    """``count`` probes, one per ``every_s`` (stopping early once ``until()``): (latencies ms, failures)."""
    latencies: list[float] = []
    failures = 0
    for _ in range(count):
        if until():
            break
        began = time.perf_counter()
        ms = probe(port, timeout_s)
        if ms is None:
            failures += 1
        else:
            latencies.append(ms)
        time.sleep(max(0.0, every_s - (time.perf_counter() - began)))
    return latencies, failures


def figures(latencies: list[float], failures: int) -> dict[str, Any]:
    ordered = sorted(latencies)
    return {"probes": len(latencies) + failures, "failures": failures,
            "p50_ms": percentile(ordered, 0.50) if ordered else None,
            "p99_ms": percentile(ordered, 0.99) if ordered else None,
            "max_ms": ordered[-1] if ordered else None}


def closes(held: Held) -> dict[str, Any]:
    def summary(group: list[HalfOpen]) -> dict[str, Any]:
        after = sorted(c.closed_after_s for c in group if c.closed_after_s is not None)
        return {"count": len(group), "closed": len(after),
                "answered_408": sum(1 for c in group if c.answer.startswith(b"HTTP/1.1 408")),
                "min_s": after[0] if after else None, "median_s": median(after) if after else None,
                "max_s": after[-1] if after else None}

    return {"silent": summary([c for c in held.connections if not c.trickles]),
            "trickling": summary([c for c in held.connections if c.trickles])}


def _port(url: str) -> int:
    return int(url.rsplit(":", 1)[1].split("/", 1)[0])


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def homepage_run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    with homepage(work, "half-open") as (url, _child):
        port = _port(url)
        probes(port, 50, 5, 0)  # warm-up: imports, the first answers
        idle = figures(*probes(port, args.probes, 5, args.every))
        print(f"idle: /healthz p50 {_ms(idle['p50_ms'])} ms, p99 {_ms(idle['p99_ms'])} ms, max "
              f"{_ms(idle['max_ms'])} ms over {idle['probes']} probes, {idle['failures']} failed", flush=True)
        opened = time.monotonic()
        held = open_half(port, args.connections)
        held.start()
        open_s = time.monotonic() - opened
        try:
            # Probe while every one of them is still held (the first close ends the window).
            loaded = figures(*probes(port, args.probes, 5, args.every,
                                     until=lambda: held.open_count() < args.connections))
            still_open = held.open_count()
            deadline = time.monotonic() + args.watch
            while held.open_count() and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            held.close()
        closed = closes(held)
    print(f"{args.connections} half-open opened in {open_s:.2f} s; held: /healthz p50 {_ms(loaded['p50_ms'])} ms, "
          f"p99 {_ms(loaded['p99_ms'])} ms, max {_ms(loaded['max_ms'])} ms over {loaded['probes']} probes, "
          f"{loaded['failures']} failed ({still_open} of {args.connections} still open when probing ended)",
          flush=True)
    for name, group in closed.items():
        print(f"  {name}: {group['closed']}/{group['count']} closed by the server after {_ms(group['min_s'])}-"
              f"{_ms(group['max_s'])} s (median {_ms(group['median_s'])} s), {group['answered_408']} answered 408",
              flush=True)
    return {"idle": idle, "held": loaded, "held_open_while_probing": still_open, "opened_in_s": open_s,
            "closes": closed}


def yardstick_run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    with yardstick(work) as (url, _child):
        port = _port(url)
        probes(port, 20, 5, 0)
        held = open_half(port, args.connections)
        held.start()
        try:
            time.sleep(0.5)
            loaded = figures(*probes(port, args.yardstick_probes, args.yardstick_timeout, 0))
            still_open = held.open_count()
        finally:
            held.close()
    print(f"yardstick (functions-framework default server, Flask under gunicorn gthread): with "
          f"{args.connections} half-open held, {loaded['failures']} of {loaded['probes']} probes got no answer "
          f"within {args.yardstick_timeout:g} s; {still_open} of {args.connections} half-open still open", flush=True)
    return {"held": loaded, "timeout_s": args.yardstick_timeout, "still_open": still_open}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--connections", type=int, default=300, help="half-open connections to hold")
    parser.add_argument("--probes", type=int, default=300, help="health probes, idle and then held")
    parser.add_argument("--every", type=float, default=0.02, help="seconds between probe starts")
    parser.add_argument("--watch", type=float, default=30.0, help="seconds to wait for the server's closes")
    parser.add_argument("--yardstick-probes", type=int, default=5)
    parser.add_argument("--yardstick-timeout", type=float, default=2.0)
    args = parser.parse_args(argv)
    load = os.getloadavg()
    with work_dir("barrage-bench-half-open-") as work:
        result = homepage_run(work, args)
        result["yardstick"] = yardstick_run(work, args) if args.yardstick_probes else None
    result.update(connections=args.connections, target_ms=TARGET_MS, load_before=list(load),
                  load_after=list(os.getloadavg()))
    held = result["held"]
    # p99, not max: on this shared machine the idle probes' max alone passes 100 ms now and then.
    met = not held["failures"] and held["p99_ms"] is not None and held["p99_ms"] <= TARGET_MS
    result["met"] = met
    silent = result["closes"]["silent"]
    print(f"/healthz with {args.connections} half-open held: p50 {_ms(held['p50_ms'])} ms, p99 "
          f"{_ms(held['p99_ms'])} ms, max {_ms(held['max_ms'])} ms (idle p99 {_ms(result['idle']['p99_ms'])} ms): "
          f"{'met' if met else 'NOT met'} (p99 <= {TARGET_MS:g} ms, no probe failed); the half-open closed by the "
          f"server after {_ms(silent['median_s'])} s (median); load average {load[0]:.1f} before", flush=True)
    emit_json(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
