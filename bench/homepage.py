"""The HomePage at scale (issue 14): single-barrage POSTs against a yardstick, and 1,000 SSE viewers.

POST: wrk (Debian's ``wrk``; ``apt-get install wrk``), ``--threads`` threads and ``--connections``
keep-alive connections for ``--duration`` s, every request one barrage POSTed to the HomePage as
``barrage up`` runs it (functions-framework's ASGI app, uvicorn on uvloop and httptools), which
publishes it to the bundled broker with acks=all before answering 202. ``--workers 1,2``
measures it with one worker process (``barrage up``'s default) and with two (``WORKERS=2``, one
per core here), side by side. The yardstick is a
function that returns "ok" on functions-framework's default server (Flask under gunicorn
gthread), sent the same POST. Rounds alternate; the ratio is per round, then the median. After
the rounds, the topic's offsets are checked against the 202s (no answer without the broker's ack).

Viewers: ``--viewers`` connections (asyncio, this process) to ``GET /api/stream?room=bench`` on one
HomePage process (in-process bus, SQLite); once every viewer has its first event, ``--marks``
barrages are POSTed one at a time and, for each, the share of viewers whose stream carried it
within 2 s. RSS is the HomePage worker's (VmRSS), before the viewers connect and once they all
have.

    .venv/bin/python bench/homepage.py [--duration 10] [--rounds 3] [--viewers 1000] [--marks 5]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import Child, base_env, descendants, emit_json, healthy, median, spawn, wait_for, work_dir

from functions.loadrun import percentile  # the one nearest-rank definition
from local.broker import LocalBroker
from local.supervisor import free_port

TOPIC = "barrage-info"
REACH_S = 2.0
WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"room": "bench", "user": "wrk", "text": "one barrage per request"}'
"""
YARDSTICK = '''
def noop(request):
    return "ok"
'''


# -- processes ----------------------------------------------------------------------------------


@contextlib.contextmanager
def homepage(work: Path, name: str, **env: str) -> Iterator[tuple[str, Child]]:
    """The HomePage exactly as ``barrage up`` starts it (argv and environment from local.stack), plus ``env``."""
    from local.stack import StackOptions, stack_specs

    port = free_port()
    bus = "kafka" if "KAFKA_SERVER" in env else "memory"
    env = {k: v for k, v in env.items() if v}
    options = StackOptions(data_dir=work / name, port=port, bus=bus, kafka_server=env.get("KAFKA_SERVER"))
    (work / name).mkdir(exist_ok=True)
    spec = next(s for s in stack_specs(options)[0] if s.name == "homepage")
    child = spawn(spec.argv, {**base_env(), **spec.env, **env}, work / f"{name}.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url + "/healthz") or child.process.poll() is not None, 60, f"the {name} HomePage")
        if child.process.poll() is not None:
            raise RuntimeError(f"the {name} HomePage exited:\n{child.log()}")
        child.remember_descendants()
        yield url, child
    finally:
        child.stop()


@contextlib.contextmanager
def yardstick(work: Path) -> Iterator[tuple[str, Child]]:
    """A do-nothing function on functions-framework's default server (Flask, gunicorn gthread)."""
    source = work / "yardstick.py"
    source.write_text(YARDSTICK)
    port = free_port()
    argv = [sys.executable, "-m", "functions_framework", "--source", str(source), "--target", "noop",
            "--host", "127.0.0.1", "--port", str(port)]
    child = spawn(argv, base_env(), work / "yardstick.log")
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: healthy(url + "/") or child.process.poll() is not None, 60, "the yardstick")
        if child.process.poll() is not None:
            raise RuntimeError(f"the yardstick exited:\n{child.log()}")
        child.remember_descendants()
        yield url, child
    finally:
        child.stop()


def worker_pid(child: Child) -> int:
    """The server process that serves requests: the deepest server process (a worker, if there are several)."""
    pids = [p for p in [child.process.pid, *descendants(child.process.pid)]
            if "functions.serve" in _cmdline(p) or "spawn_main" in _cmdline(p)]
    return max(pids, key=lambda p: len(_ancestry(p)))


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ancestry(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            pid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            break
        chain.append(pid)
    return chain


def cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds used so far by these processes (all their threads)."""
    import os

    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / ticks


def tree(pid: int) -> list[int]:
    return [pid, *descendants(pid)]


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


# -- POST throughput ------------------------------------------------------------------------------


def wrk(url: str, script: Path, threads: int, connections: int, duration_s: float) -> dict[str, Any]:
    tool = shutil.which("wrk")
    if tool is None:
        raise SystemExit("bench/homepage.py needs wrk: apt-get install wrk")
    argv = [tool, f"-t{threads}", f"-c{connections}", f"-d{duration_s:g}s", "--latency", "-s", str(script), url]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=duration_s + 60)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    out = done.stdout
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    latency = {m.group(1): _ms(m.group(2), m.group(3)) for m in re.finditer(r"^\s+(50|90|99)%\s+([\d.]+)(us|ms|s)\b",
                                                                                   out, re.M)}
    return {"requests": requests, "rate": rate, "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
            "socket_errors": sum(int(g) for g in errors.groups()) if errors else 0, "latency_ms": latency}


def _ms(value: str, unit: str) -> float:
    return float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit]


def topic_records(bootstrap: str) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-watermarks"})
    try:
        metadata = consumer.list_topics(TOPIC, timeout=10)
        total = 0
        for partition in metadata.topics[TOPIC].partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(TOPIC, partition), timeout=10)
            total += high - low
        return total
    finally:
        consumer.close()


def _cpu_text(figures: dict[str, float]) -> str:
    return ", ".join(f"{name} {ms:.2f}" for name, ms in figures.items()) or "-"


def alternating_rounds(urls: dict[str, str], processes: dict[str, list[int]], script: Callable[[], Path],
                       args: argparse.Namespace, names: list[str]) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """A 2 s warm-up of each of ``urls`` (``names`` and ``yardstick``), then ``args.rounds`` rounds of wrk
    against each, the order reversed every other round. Per round: each server's wrk figures, the CPU ms
    per request of every process in ``processes`` and each server's ratio to the yardstick. Also the
    2xx answers each of ``names`` gave, warm-up included. ``script`` gives the wrk script for each run."""
    answered = dict.fromkeys(names, 0)
    for name, url in urls.items():  # warm-up: connections, producers, imports
        result = wrk(url, script(), args.threads, args.connections, 2)
        if name != "yardstick":
            answered[name] += result["requests"] - result["non_2xx"]
    rounds: list[dict[str, Any]] = []
    for index in range(args.rounds):
        order = list(urls.items())
        if index % 2:
            order.reverse()
        figures: dict[str, Any] = {}
        for name, url in order:
            before = {k: cpu_s(v) for k, v in processes.items()}
            figures[name] = wrk(url, script(), args.threads, args.connections, args.duration)
            used = {k: cpu_s(v) - before[k] for k, v in processes.items()}
            # CPU milliseconds per request, per process: where the time goes.
            figures[name]["cpu_ms_per_request"] = {k: 1000 * v / max(1, figures[name]["requests"])
                                                   for k, v in used.items() if v > 0.05}
            if name != "yardstick":
                answered[name] += figures[name]["requests"] - figures[name]["non_2xx"]
        for name in names:
            figures[name]["ratio"] = figures[name]["rate"] / figures["yardstick"]["rate"]
        rounds.append(figures)
        line = "; ".join(
            f"{name} {figures[name]['rate']:,.0f}/s = {figures[name]['ratio']:.2f}x (p50 "
            f"{figures[name]['latency_ms'].get('50', float('nan')):.1f} ms, p99 "
            f"{figures[name]['latency_ms'].get('99', float('nan')):.1f} ms, non-2xx {figures[name]['non_2xx']}, "
            f"CPU ms/request {_cpu_text(figures[name]['cpu_ms_per_request'])})" for name in names)
        print(f"round {index + 1}: yardstick {figures['yardstick']['rate']:,.0f}/s (CPU ms/request "
              f"{_cpu_text(figures['yardstick']['cpu_ms_per_request'])}); {line}", flush=True)
    return rounds, answered


def round_medians(rounds: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """One server's figures over the rounds: medians of rate, ratio and latency; sums of the failures."""
    return {
        "rate": median([r[name]["rate"] for r in rounds]),
        "ratio": median([r[name]["ratio"] for r in rounds]),
        "p50_ms": median([r[name]["latency_ms"].get("50", float("nan")) for r in rounds]),
        "p99_ms": median([r[name]["latency_ms"].get("99", float("nan")) for r in rounds]),
        "non_2xx": sum(r[name]["non_2xx"] for r in rounds),
        "socket_errors": sum(r[name]["socket_errors"] for r in rounds),
    }


def post_rounds(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    script = work / "post.lua"
    script.write_text(WRK_SCRIPT)
    workers = [int(w) for w in args.workers.split(",")]
    names = [f"homepage-{w}w" for w in workers]
    with contextlib.ExitStack() as stack:
        broker = stack.enter_context(LocalBroker(topics=[TOPIC]))
        urls: dict[str, str] = {}
        processes: dict[str, list[int]] = {"broker": tree(broker._process.pid if broker._process else 0)}
        for name, count in zip(names, workers, strict=True):
            url, child = stack.enter_context(homepage(work, name, KAFKA_SERVER=broker.bootstrap, WORKERS=str(count)))
            urls[name], processes[name] = url + "/api/barrages", tree(child.process.pid)
        stick, stick_child = stack.enter_context(yardstick(work))
        urls["yardstick"], processes["yardstick"] = stick + "/", tree(stick_child.process.pid)
        rounds, counted = alternating_rounds(urls, processes, lambda: script, args, names)
        answered = sum(counted.values())
        in_topic = topic_records(broker.bootstrap)
    # Requests cut off when wrk stops may be published without being counted: at most one per connection.
    slack = args.connections * (args.rounds + 1) * len(names)
    consistent = answered <= in_topic <= answered + slack
    print(f"202 answers counted by wrk: {answered:,}; records in {TOPIC}: {in_topic:,} "
          f"({'consistent' if consistent else 'INCONSISTENT'}: at most {slack} uncounted in-flight)", flush=True)
    per_config = {
        name: {
            **round_medians(rounds, name), "workers": count,
            "cpu_ms_per_request": {k: median([r[name]["cpu_ms_per_request"].get(k, 0.0) for r in rounds])
                                   for k in ("broker", name)},
        }
        for name, count in zip(names, workers, strict=True)
    }
    return {
        "homepage": per_config,
        "yardstick": median([r["yardstick"]["rate"] for r in rounds]),
        "yardstick_cpu_ms_per_request": median([r["yardstick"]["cpu_ms_per_request"].get("yardstick", 0.0)
                                                for r in rounds]),
        "answered": answered, "in_topic": in_topic, "consistent": consistent,
        "threads": args.threads, "connections": args.connections, "duration_s": args.duration,
        "rounds": rounds,
    }


# -- SSE viewers ------------------------------------------------------------------------------------


def _in_ms(seconds: float | None) -> float | None:
    return seconds * 1000 if seconds is not None else None


class Viewer:
    """One EventSource-like connection: records when each mark first shows up in its stream."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.ready = asyncio.Event()
        self.seen: dict[str, float] = {}
        self.error: str | None = None
        self.ended = False

    async def run(self, host: str, port: int, room: str) -> None:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError as exc:
            self.error = f"connect: {exc}"
            self.ready.set()
            return
        try:
            writer.write(f"GET /api/stream?room={room} HTTP/1.1\r\nHost: {host}\r\n"
                         f"Accept: text/event-stream\r\n\r\n".encode())
            head = await reader.readuntil(b"\r\n\r\n")
            if b" 200 " not in head.split(b"\r\n", 1)[0]:
                self.error = head.split(b"\r\n", 1)[0].decode(errors="replace")
                self.ready.set()
                return
            tail = b""
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    self.ended = True
                    return
                now = time.monotonic()
                text = tail + chunk
                if not self.ready.is_set() and b"data:" in text:
                    self.ready.set()
                for match in re.finditer(rb"mark-\d+-[0-9a-f]{8}", text):
                    self.seen.setdefault(match.group().decode(), now)
                tail = text[-64:]
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = f"{type(exc).__name__}: {exc}"
        finally:
            self.ready.set()
            writer.close()


def post_one(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(url + "/api/barrages", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        return int(response.status)


async def watch(url: str, pid: int, count: int, marks: int) -> dict[str, Any]:
    host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    # Warm the stream path once (imports, the room's first read) so the baseline holds the code, not viewers.
    warm = Viewer(-1)
    warm_task = asyncio.create_task(warm.run(host, port, "warm-up"))
    await asyncio.wait_for(warm.ready.wait(), 30)
    warm_task.cancel()
    await asyncio.sleep(1.0)
    baseline_kb = rss_kb(pid)
    viewers = [Viewer(i) for i in range(count)]
    started = time.monotonic()
    gate = asyncio.Semaphore(200)  # connects in flight at once (the listen backlog is 2048)

    async def connect(viewer: Viewer) -> None:
        async with gate:
            task = asyncio.create_task(viewer.run(host, port, "bench"))
            await viewer.ready.wait()
        await task

    tasks = [asyncio.create_task(connect(v)) for v in viewers]
    await asyncio.wait_for(asyncio.gather(*(v.ready.wait() for v in viewers)), 120)
    connected_s = time.monotonic() - started
    failed = [v for v in viewers if v.error]
    await asyncio.sleep(1.0)
    loaded_kb = rss_kb(pid)
    results: list[dict[str, Any]] = []
    for n in range(marks):
        mark = f"mark-{n}-{time.time_ns() & 0xFFFFFFFF:08x}"
        sent_at = time.monotonic()
        status = await loop.run_in_executor(None, post_one, url, {"room": "bench", "user": "bench", "text": mark})
        await asyncio.sleep(REACH_S + 0.5)
        delays = [v.seen[mark] - sent_at for v in viewers if mark in v.seen]
        within = sum(1 for d in delays if d <= REACH_S)
        results.append({"status": status, "reached": len(delays), "within_2s": within,
                        "p50_ms": _in_ms(percentile(sorted(delays), 0.50)),
                        "p99_ms": _in_ms(percentile(sorted(delays), 0.99)),
                        "max_ms": max(delays) * 1000 if delays else None})
        p50, p99 = results[-1]["p50_ms"] or float("nan"), results[-1]["p99_ms"] or float("nan")
        print(f"mark {n + 1}: {within}/{count} viewers within {REACH_S:g} s (p50 {p50:.0f} ms, p99 {p99:.0f} ms)",
              flush=True)
    ended = sum(1 for v in viewers if v.ended)
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return {
        "viewers": count, "connected": count - len(failed), "connect_errors": sorted({v.error or "" for v in failed}),
        "connected_in_s": connected_s, "ended_early": ended,
        "rss_baseline_kb": baseline_kb, "rss_loaded_kb": loaded_kb,
        "rss_per_viewer_kb": (loaded_kb - baseline_kb) / count,
        "marks": results,
        "reached_within_2s": min(r["within_2s"] for r in results) / count if results else 0.0,
        "worst_p99_ms": max((r["p99_ms"] or 0.0) for r in results) if results else None,
    }


def viewer_run(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    with homepage(work, "memory") as (url, child):
        pid = worker_pid(child)
        figures = asyncio.run(watch(url, pid, args.viewers, args.marks))
    print(f"{figures['connected']}/{figures['viewers']} viewers connected in {figures['connected_in_s']:.1f} s; "
          f"RSS {figures['rss_baseline_kb'] / 1024:.1f} MiB -> {figures['rss_loaded_kb'] / 1024:.1f} MiB "
          f"({figures['rss_per_viewer_kb']:.1f} KB per viewer); worst mark reached "
          f"{figures['reached_within_2s']:.1%} within {REACH_S:g} s", flush=True)
    return figures


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--connections", type=int, default=32, help="wrk keep-alive connections")
    parser.add_argument("--workers", default="1,2",
                        help="HomePage worker processes (WORKERS) to measure, comma-separated (1: barrage up's)")
    parser.add_argument("--viewers", type=int, default=1000)
    parser.add_argument("--marks", type=int, default=5, help="barrages sent to the viewers, one at a time")
    args = parser.parse_args(argv)
    with work_dir("barrage-bench-homepage-") as work:
        post = post_rounds(work, args)
        viewers = viewer_run(work, args)
    for name, figures in post["homepage"].items():
        print(f"POST: {name} {figures['rate']:,.0f}/s vs yardstick {post['yardstick']:,.0f}/s = "
              f"{figures['ratio']:.2f}x (median of {args.rounds} rounds)", flush=True)
    emit_json({"post": post, "viewers": viewers})
    clean = post["consistent"] and all(f["non_2xx"] == 0 for f in post["homepage"].values())
    return 0 if clean else 1


if __name__ == "__main__":
    raise SystemExit(main())
