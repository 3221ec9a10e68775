"""End to end: HomePage -> Kafka -> dispatcher -> processor -> SQLite, as ``barrage up`` runs it.

For each delivery mode (``--batch-size 0``: per event as KafkaSource; ``--batch-size N``: batches)
one stack is started (``python -m local.cli up`` on free loopback ports) and measured:

1. throughput: ``--count`` barrages POSTed to /api/barrages by ``--threads`` keep-alive
   connections, ``--per-post`` barrages per POST (bodies built before the clock starts).
   accepted/s = count / time until the last 202; stored/s = count / time until the SQLite store
   holds them all (its row count, polled every 10 ms from this process).
2. ceiling: a raw confluent-kafka produce+consume loop of the same number of records (encoded as
   the publisher encodes them, same producer settings) on a fresh topic of the same broker, from
   the first produce to the last record consumed; run right after (1), same machine state.
3. latency at fixed offered rates (``--rates``), open loop: a pacer posts what is due every 5 ms
   (its HTTP calls run on a pool, so a slow answer never delays the schedule); each barrage
   carries ``sent_at`` = its scheduled send time (ms). Stored time = the ``processed_at`` the
   processor stamps (ms, same machine clock). latency = processed_at - sent_at.
   processed_at is taken just before the SQLite write of the batch, so the commit (~1 ms) is not in it.
   The time until the HomePage's 202 (client clock) is reported too: it splits the latency into
   accepting (HTTP + publish with acks) and delivering (Kafka -> dispatcher -> processor).

CPU seconds of each process (broker, dispatcher, processor, HomePage, this load generator) during
(1) show where the time goes; ``--profile`` also samples the Python processes with py-spy
during a separate, unmeasured repeat of (1) and prints the busiest frames.

    .venv/bin/python bench/e2e.py [--modes 0,500] [--count 20000] [--rates 100,500,1000] [--profile]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
import uuid
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import (
    KeepAlive,
    Stack,
    descendants,
    emit_json,
    median,
    profile_pids,
    run_threads,
    running_stack,
    summarise_profile,
    work_dir,
)

from functions.adapters.kafka import encode_barrage
from functions.adapters.sqlite import SQLiteResultStore
from functions.kafka import KafkaSettings, producer_config
from functions.loadrun import percentile  # one nearest-rank definition, the page's own
from handlers.model import Barrage, new_id

TICK_S = 0.005
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -- load ---------------------------------------------------------------------------------------


def bodies_for(room: str, count: int, per_post: int, sent_at: list[int] | None = None) -> list[bytes]:
    bodies = []
    for start in range(0, count, per_post):
        items: list[dict[str, Any]] = []
        for i in range(start, min(count, start + per_post)):
            item: dict[str, Any] = {"room": room, "user": f"user-{i % 97}", "text": f"e2e benchmark barrage {i}"}
            if sent_at is not None:
                item["sent_at"] = sent_at[i]
            items.append(item)
        bodies.append(json.dumps(items).encode())
    return bodies


def post(client: KeepAlive, body: bytes) -> int:
    """POST one list; the number accepted (retries 503 and partial failures as a client would)."""
    while True:
        status, reply = client.request("POST", "/api/barrages", body, {"content-type": "application/json"})
        if status == 202:
            parsed = json.loads(reply)
            if not parsed["failed"]:
                return len(parsed["accepted"])
        elif status != 503:
            raise RuntimeError(f"HomePage answered {status}: {reply[:300]!r}")
        time.sleep(0.05)


def stored_count(store: SQLiteResultStore) -> int:
    return store.count()


def wait_stored(store: SQLiteResultStore, target: int, timeout_s: float) -> float:
    """perf_counter() when the store first holds ``target`` rows."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if stored_count(store) >= target:
            return time.perf_counter()
        time.sleep(0.01)
    raise RuntimeError(f"store holds {stored_count(store)} of {target} after {timeout_s:.0f} s")


def throughput(stack: Stack, store: SQLiteResultStore, count: int, per_post: int, threads: int,
               room: str) -> dict[str, float]:
    bodies = bodies_for(room, count, per_post)
    before = stored_count(store)
    accepted = [0] * threads

    def worker(index: int) -> None:
        client = KeepAlive(stack.url)
        try:
            for body in bodies[index::threads]:
                accepted[index] += post(client, body)
        finally:
            client.close()

    started = time.perf_counter()
    posting = run_threads(threads, worker)
    if sum(accepted) != count:
        raise RuntimeError(f"accepted {sum(accepted)} of {count}")
    done = wait_stored(store, before + count, 300)
    return {"accepted_per_s": count / posting, "stored_per_s": count / (done - started),
            "post_s": posting, "stored_s": done - started}


# -- the raw Kafka ceiling ------------------------------------------------------------------------


def raw_ceiling(bootstrap: str, count: int, partitions: int = 3) -> float:
    """Records/s of a plain produce loop with a consumer reading them back, first produce to last read."""
    from confluent_kafka import Consumer, Producer, TopicPartition
    from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

    topic = f"bench-raw-{uuid.uuid4().hex[:10]}"
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)]).values():
        future.result(30)
    now = int(time.time() * 1000)
    messages = [encode_barrage(Barrage(new_id(now + i), f"room-{i % 50}", f"user-{i % 97}",
                                       f"e2e benchmark barrage {i}", now + i)) for i in range(count)]
    headers: list[dict[str, str | bytes | None]] = [dict(m.headers) for m in messages]
    producer = Producer(producer_config(KafkaSettings(servers=(bootstrap,), topic=topic, publish_timeout_s=60)))
    producer.produce(topic, value=b"warm-up", key=b"warm-up")
    if producer.flush(30):
        raise RuntimeError("raw producer: warm-up record not acknowledged")
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{topic}", "enable.auto.commit": False,
                         "fetch.wait.max.ms": 20})
    consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    while not consumer.consume(10, 0.5):  # the warm-up record: the consumer is connected and fetching
        pass
    received = [0]
    finished = [0.0]

    def consume() -> None:
        deadline = time.monotonic() + 300
        while received[0] < count and time.monotonic() < deadline:
            received[0] += sum(1 for m in consumer.consume(1000, 0.1) if m.error() is None)
        finished[0] = time.perf_counter()

    reader = threading.Thread(target=consume, daemon=True)
    reader.start()
    started = time.perf_counter()
    for message, message_headers in zip(messages, headers, strict=True):
        while True:
            try:
                producer.produce(topic, value=message.value, key=message.key, headers=message_headers)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    producer.flush(60)
    reader.join(300)
    consumer.close()
    if received[0] < count:
        raise RuntimeError(f"raw consumer read {received[0]} of {count}")
    return count / (finished[0] - started)


# -- latency --------------------------------------------------------------------------------------


def latency(stack: Stack, store: SQLiteResultStore, rate: float, duration_s: float,
            room: str) -> dict[str, float | None]:
    total = int(rate * duration_s)
    start_epoch_ms = int(time.time() * 1000) + 200
    schedule_ms = [start_epoch_ms + int(i * 1000 / rate) for i in range(total)]
    local = threading.local()
    pool = ThreadPoolExecutor(16)
    futures: list[Future[int]] = []
    lag: list[float] = []
    accept: list[float] = []  # scheduled send -> 202 received, ms

    def send(body: bytes, scheduled: list[int]) -> int:
        client = getattr(local, "client", None)
        if client is None:
            client = local.client = KeepAlive(stack.url)
        accepted = post(client, body)
        done_ms = time.time() * 1000
        accept.extend(done_ms - s for s in scheduled)
        return accepted

    sent = 0
    while sent < total:
        now_ms = time.time() * 1000
        due = sent
        while due < total and schedule_ms[due] <= now_ms:
            due += 1
        if due > sent:
            lag.append(now_ms - schedule_ms[sent])
            futures.append(pool.submit(send, bodies_for(room, due - sent, due - sent, schedule_ms[sent:due])[0],
                                       schedule_ms[sent:due]))
            sent = due
        next_ms = schedule_ms[sent] if sent < total else now_ms
        time.sleep(max(0.0, min(TICK_S, (next_ms - time.time() * 1000) / 1000)))
    accepted = sum(f.result() for f in futures)
    pool.shutdown()
    if accepted != total:
        raise RuntimeError(f"accepted {accepted} of {total}")
    latencies: list[float] = []
    deadline = time.monotonic() + 120
    cursor: str | None = None
    while len(latencies) < total and time.monotonic() < deadline:
        page = store.since(room, cursor, 1000)
        latencies.extend(r.processed_at - r.sent_at for r in page.items)
        cursor = page.cursor
        if not page.items:
            time.sleep(0.05)
    if len(latencies) < total:
        raise RuntimeError(f"only {len(latencies)} of {total} stored")
    latencies, lag, accept = sorted(latencies), sorted(lag), sorted(accept)
    return {"rate": rate, "count": total, "p50": percentile(latencies, 0.50), "p95": percentile(latencies, 0.95),
            "p99": percentile(latencies, 0.99), "max": latencies[-1], "pacer_lag_p99": percentile(lag, 0.99),
            "accept_p50": percentile(accept, 0.50), "accept_p99": percentile(accept, 0.99)}


# -- where the time goes ------------------------------------------------------------------------


def component(pid: int) -> str:
    try:
        line = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return "gone"
    for needle, name in (("--target homepage", "homepage"), ("--target processor", "processor"),
                         (" dispatch ", "dispatcher"), ("tansu", "broker"), (" broker ", "broker"),
                         (" up ", "supervisor")):
        if needle in line:
            return name
    return "other"


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def cpu_snapshot(stack: Stack) -> dict[int, float]:
    pids = [stack.child.process.pid, *descendants(stack.child.process.pid)]
    snapshot = {pid: cpu_seconds(pid) for pid in pids}
    snapshot[os.getpid()] = cpu_seconds(os.getpid())
    return snapshot


def cpu_by_component(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    used: dict[str, float] = {}
    for pid, seconds in after.items():
        name = "load generator (this process)" if pid == os.getpid() else component(pid)
        used[name] = used.get(name, 0.0) + seconds - before.get(pid, 0.0)
    return used


def busiest(stack: Stack, needle: str) -> int | None:
    pids = stack.pids(needle)
    return max(pids, key=cpu_seconds) if pids else None


# -- driver -------------------------------------------------------------------------------------------


def run_mode(work: Path, batch_size: int, args: argparse.Namespace) -> dict[str, Any]:
    extra = ["--batch-size", str(batch_size)] if batch_size else []
    result: dict[str, Any] = {"batch_size": batch_size}
    with running_stack(work, *extra) as stack:
        store = SQLiteResultStore(stack.db)
        throughput(stack, store, 500, args.per_post, args.threads, "warm-up")
        before = cpu_snapshot(stack)
        measured = throughput(stack, store, args.count, args.per_post, args.threads, f"tp-{batch_size}")
        result.update(measured)
        result["cpu_s"] = cpu_by_component(before, cpu_snapshot(stack))
        result["raw_per_s"] = raw_ceiling(stack.bootstrap, args.count)
        result["ratio_to_raw"] = measured["stored_per_s"] / result["raw_per_s"]
        print(f"  throughput: accepted {measured['accepted_per_s']:,.0f}/s, stored {measured['stored_per_s']:,.0f}/s"
              f" ({args.count} barrages, all stored after {measured['stored_s']:.2f} s); raw Kafka "
              f"{result['raw_per_s']:,.0f}/s; stored/raw {result['ratio_to_raw']:.2f}", flush=True)
        print("  CPU seconds during the run: " + ", ".join(
            f"{k} {v:.1f}" for k, v in sorted(result["cpu_s"].items(), key=lambda kv: -kv[1]) if v >= 0.05))
        result["latency"] = []
        for rate in args.rates:
            figures = latency(stack, store, rate, args.duration, f"lat-{batch_size}-{int(rate)}")
            result["latency"].append(figures)
            print(f"  latency at {rate:,.0f}/s ({figures['count']} barrages): p50 {figures['p50']:.0f} ms, "
                  f"p95 {figures['p95']:.0f} ms, p99 {figures['p99']:.0f} ms, max {figures['max']:.0f} ms "
                  f"(of which until the 202: p50 {figures['accept_p50']:.0f} ms, p99 {figures['accept_p99']:.0f} ms; "
                  f"pacer lag p99 {figures['pacer_lag_p99']:.1f} ms)", flush=True)
        if args.profile:
            result["profile"] = profile(stack, store, work, batch_size, args)
        store.close()
    return result


def profile(stack: Stack, store: SQLiteResultStore, work: Path, batch_size: int,
            args: argparse.Namespace) -> dict[str, list[tuple[str, float, float]]]:
    targets = {name: pid for name, pid in (("homepage", busiest(stack, "--target homepage")),
                                          ("processor", busiest(stack, "--target processor")),
                                          ("dispatcher", busiest(stack, " dispatch "))) if pid is not None}
    out = work / f"profile-{batch_size}"
    out.mkdir(exist_ok=True)
    recorders = profile_pids(targets, args.profile_seconds, out)
    if not recorders:
        print("  (py-spy not installed: no profile)")
        return {}
    time.sleep(0.5)
    deadline = time.monotonic() + args.profile_seconds
    round_no = 0
    while time.monotonic() < deadline:
        throughput(stack, store, min(args.count, 5000), args.per_post, args.threads, f"prof-{batch_size}-{round_no}")
        round_no += 1
    summaries = {}
    for name, recorder in recorders.items():
        recorder.wait(args.profile_seconds + 30)
        summaries[name] = summarise_profile(out / f"{name}.txt")
        print(f"  py-spy {name} (self %, inclusive %, of non-idle samples):")
        for frame, own, inclusive in summaries[name]:
            print(f"    {own:5.1f}% {inclusive:5.1f}%  {frame}")
    return summaries


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--modes", default="0,500", help="dispatcher batch sizes to run, 0 = per event")
    parser.add_argument("--count", type=int, default=20000, help="barrages in the throughput run")
    parser.add_argument("--per-post", type=int, default=100, help="barrages per POST (max 500)")
    parser.add_argument("--threads", type=int, default=8, help="load generator connections")
    parser.add_argument("--rates", default="100,500,1000", help="offered rates for the latency runs, /s")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per latency run")
    parser.add_argument("--profile", action="store_true", help="py-spy the Python processes (extra run)")
    parser.add_argument("--profile-seconds", type=float, default=8.0)
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",") if r.strip()]
    modes = [int(m) for m in args.modes.split(",") if m.strip()]
    results = []
    for batch_size in modes:
        print(f"delivery {'batch ' + str(batch_size) if batch_size else 'per event'}:", flush=True)
        with work_dir(f"bench-e2e-{batch_size}-") as work:
            results.append(run_mode(work, batch_size, args))
    if len(results) == 2 and results[0]["batch_size"] == 0:
        ratio = results[1]["stored_per_s"] / results[0]["stored_per_s"]
        print(f"batch/per-event stored throughput: {ratio:.1f}x")
    print(f"count={args.count} per_post={args.per_post} threads={args.threads} duration={args.duration}s")
    emit_json({"modes": results, "count": args.count, "per_post": args.per_post, "threads": args.threads,
               "duration": args.duration, "median_stored": median([r["stored_per_s"] for r in results])})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
