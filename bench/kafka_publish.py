"""Throughput of KafkaPublisher.publish_many against a raw confluent-kafka producer loop.

Both send the same records (the raw loop gets them pre-encoded, so it pays neither the
CloudEvents encoding nor the per-call wait for acks; both are warmed up with one acknowledged
record first) to a fresh topic each, with the same
producer settings (acks=all, idempotent), in the same run, alternating, several rounds.

    .venv/bin/python bench/kafka_publish.py [--count 20000] [--batch 500] [--threads 1] [--rounds 5]

Without --bootstrap it starts the bundled broker (local.broker) on a free loopback port.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from typing import Any

from confluent_kafka import Producer

from functions.adapters.kafka import KafkaPublisher, encode_barrage
from functions.kafka import KafkaSettings, producer_config
from handlers.model import Barrage
from local.broker import LocalBroker


def make_barrages(count: int, rooms: int, tag: str) -> list[Barrage]:
    return [
        Barrage(
            id=f"{tag}-{i:07d}",
            room=f"room-{i % rooms}",
            user=f"user-{i % 97}",
            text=f"benchmark barrage number {i} with some text",
            sent_at=1_700_000_000_000 + i,
            colour="#ffd166",
        )
        for i in range(count)
    ]


def run_raw(settings: KafkaSettings, barrages: list[Barrage]) -> float:
    """Records per second of a plain produce loop, from first produce to the last ack."""
    messages = [encode_barrage(b) for b in barrages]
    headers: list[dict[str, str | bytes | None]] = [dict(m.headers) for m in messages]
    config: dict[str, Any] = dict(producer_config(settings))
    producer = Producer(config)
    # Warm up exactly like the publisher below: one acknowledged record first, so neither run
    # times the producer id request and connection set-up (records queued behind those leave
    # in a few huge batches and make a cold run look several times faster).
    producer.produce(settings.topic, value=b"warm-up", key=b"warm-up")
    if producer.flush(10):
        raise SystemExit("raw producer: warm-up record not acknowledged")
    failures = 0

    def on_delivery(err: Any, _msg: Any) -> None:
        nonlocal failures
        if err is not None:
            failures += 1

    started = time.perf_counter()
    for message, message_headers in zip(messages, headers, strict=True):
        while True:
            try:
                producer.produce(
                    settings.topic,
                    value=message.value,
                    key=message.key,
                    headers=message_headers,
                    on_delivery=on_delivery,
                )
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(60)
    elapsed = time.perf_counter() - started
    if left or failures:
        raise SystemExit(f"raw producer: {left} undelivered, {failures} failed")
    return len(messages) / elapsed


def run_publisher(settings: KafkaSettings, barrages: list[Barrage], batch: int, threads: int) -> float:
    """Records per second through publish_many, ``batch`` barrages per call, acks awaited each call.

    With ``threads`` > 1, that many callers share the publisher (as HTTP worker threads do),
    each taking every n-th batch.
    """
    publisher = KafkaPublisher(settings)
    publisher.publish_many(make_barrages(1, 1, tag="warm-up"))
    batches = [barrages[start : start + batch] for start in range(0, len(barrages), batch)]

    def caller(offset: int) -> None:
        for chunk in batches[offset::threads]:
            publisher.publish_many(chunk)

    started = time.perf_counter()
    if threads == 1:
        caller(0)
    else:
        workers = [threading.Thread(target=caller, args=(n,)) for n in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    elapsed = time.perf_counter() - started
    publisher.close()
    return len(barrages) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="records per run")
    parser.add_argument("--batch", type=int, default=500, help="barrages per publish_many call")
    parser.add_argument("--rooms", type=int, default=50)
    parser.add_argument("--threads", type=int, default=1, help="concurrent publish_many callers")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--linger-ms", type=int, default=KafkaSettings(servers=("x",)).linger_ms)
    parser.add_argument("--bootstrap", help="use this broker instead of starting the bundled one")
    args = parser.parse_args(argv)

    broker = None if args.bootstrap else LocalBroker().start()
    bootstrap = args.bootstrap or (broker.bootstrap if broker else "")
    try:
        raw_rates: list[float] = []
        publisher_rates: list[float] = []
        for round_no in range(args.rounds):
            for kind in ("raw", "publish_many"):
                topic = f"bench-{kind.replace('_', '-')}-{round_no}-{time.time_ns()}"
                if broker is not None:
                    broker.create_topics([topic], args.partitions)
                settings = KafkaSettings(
                    servers=(bootstrap,), topic=topic, linger_ms=args.linger_ms, publish_timeout_s=60
                )
                barrages = make_barrages(args.count, args.rooms, tag=f"r{round_no}")
                if kind == "raw":
                    raw_rates.append(run_raw(settings, barrages))
                else:
                    publisher_rates.append(run_publisher(settings, barrages, args.batch, args.threads))
            print(
                f"round {round_no + 1}: raw {raw_rates[-1]:,.0f} rec/s, "
                f"publish_many {publisher_rates[-1]:,.0f} rec/s, ratio {publisher_rates[-1] / raw_rates[-1]:.2f}"
            )
    finally:
        if broker is not None:
            broker.stop()
    raw, pub = statistics.median(raw_rates), statistics.median(publisher_rates)
    # Per-round ratios: both runs of a round share the machine's load at that moment.
    ratio = statistics.median(p / r for p, r in zip(publisher_rates, raw_rates, strict=True))
    print(
        f"median over {args.rounds} rounds: raw {raw:,.0f} rec/s, publish_many {pub:,.0f} rec/s, "
        f"ratio {ratio:.2f} (median of per-round ratios; target >= 0.50); count={args.count} batch={args.batch} "
        f"threads={args.threads} rooms={args.rooms} partitions={args.partitions} linger.ms={args.linger_ms}"
    )
    print("command: " + " ".join([sys.executable, *sys.argv]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
