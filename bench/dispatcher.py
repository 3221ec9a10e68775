"""Dispatcher throughput: ordered vs unordered, per event and batched, against a real processor.

Each mode gets ``--count`` fresh records on a fresh topic (``--partitions`` partitions, rooms
spread over them) published by KafkaPublisher to the bundled broker; then a Dispatcher
(local.kafkasource, the manifest's delivery settings) consumes and delivers them to the
processor as ``barrage up`` runs it (functions-framework + gunicorn, containerConcurrency from
the Knative manifest). The clock runs from the consumer's partition assignment to the moment
the processor's SQLite store holds every record. Modes alternate within each round; ratios
are against ordered per-event (KafkaSource's default) in the same round.

    .venv/bin/python bench/dispatcher.py [--count 3000] [--batch-count 20000] [--batch 500] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import BASE_MS, emit_json, median, processor_server, wait_for, work_dir

from functions.adapters.kafka import KafkaPublisher
from functions.adapters.sqlite import SQLiteResultStore
from functions.kafka import KafkaSettings
from handlers.model import Barrage, new_id
from local.broker import LocalBroker
from local.kafkasource.dispatcher import Consumer, Dispatcher, DispatchOptions
from local.kafkasource.manifest import load_manifest
from local.kafkasource.run import DEFAULT_MANIFEST, kafka_consumer_factory

MODES = {  # name: (ordering, batch size)
    "ordered": ("ordered", 0),
    "unordered": ("unordered", 0),
    "ordered-batch": ("ordered", -1),
    "unordered-batch": ("unordered", -1),
}


def publish(bootstrap: str, topic: str, count: int, tag: int) -> None:
    barrages = [
        Barrage(new_id(BASE_MS + tag * 10_000_000 + i), f"room-{i % 30}", f"user-{i % 97}",
                f"dispatch benchmark {i}", BASE_MS + i)
        for i in range(count)
    ]
    with KafkaPublisher(KafkaSettings(servers=(bootstrap,), topic=topic, publish_timeout_s=60)) as publisher:
        for start in range(0, count, 500):
            publisher.publish_many(barrages[start : start + 500])


def run_mode(broker: LocalBroker, sink: str, store: SQLiteResultStore, ordering: str, batch: int, count: int,
             partitions: int, tag: int, max_in_flight: int) -> tuple[float, dict[str, int]]:
    topic = broker.new_topic(partitions, prefix=f"bench-dispatch-{tag}")
    publish(broker.bootstrap, topic, count, tag)
    spec = replace(load_manifest(DEFAULT_MANIFEST), bootstrap_servers=(broker.bootstrap,), topics=(topic,),
                   consumer_group=f"bench-{topic}", ordering=ordering, initial_offset="earliest")
    options = DispatchOptions(sink_url=sink, batch_size=batch, max_in_flight=max_in_flight)
    settings = KafkaSettings(servers=(broker.bootstrap,), topic=topic)
    assigned: list[float] = []
    inner = kafka_consumer_factory(spec, settings)

    def factory(on_assign: Callable[..., None], on_revoke: Callable[..., None]) -> Consumer:
        def timed_assign(consumer: Any, parts: list[tuple[str, int]]) -> None:
            on_assign(consumer, parts)
            assigned.append(time.perf_counter())

        return inner(timed_assign, on_revoke)

    before = store.count()
    dispatcher = Dispatcher(spec, options, factory)
    until = threading.Event()
    thread = threading.Thread(target=dispatcher.run, args=(until,), daemon=True)
    thread.start()
    try:
        wait_for(lambda: bool(assigned), 60, "partition assignment", 0.005)
        wait_for(lambda: store.count() - before >= count, 300, f"{count} records stored", 0.01)
        elapsed = time.perf_counter() - assigned[0]
    finally:
        until.set()
        thread.join(60)
    stats = {"requests": dispatcher.stats.requests, "retries": dispatcher.stats.retries,
             "dead_lettered": dispatcher.stats.dead_lettered}
    return count / elapsed, stats


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=3000, help="records per per-event mode and round")
    parser.add_argument("--batch-count", type=int, default=20000, help="records per batch mode and round")
    parser.add_argument("--batch", type=int, default=500, help="batch modes: events per request")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--max-in-flight", type=int, default=DispatchOptions("x").max_in_flight,
                        help="unordered: requests in flight")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    parser.add_argument("--container-concurrency", type=int, default=None)
    args = parser.parse_args(argv)
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    rates: dict[str, list[float]] = {m: [] for m in modes}
    stats: dict[str, dict[str, int]] = {}
    with (
        work_dir("bench-dispatcher-") as work,
        LocalBroker() as broker,
        processor_server(work / "dispatch.db", work, args.container_concurrency) as (sink, _child),
    ):
        store = SQLiteResultStore(work / "dispatch.db")
        run_mode(broker, sink, store, "ordered", 0, 100, args.partitions, 0, args.max_in_flight)  # warm-up
        for round_no in range(args.rounds):
            line = []
            for n, mode in enumerate(modes):
                ordering, batch = MODES[mode]
                batch = args.batch if batch < 0 else batch
                count = args.batch_count if batch else args.count
                rate, stats[mode] = run_mode(broker, sink, store, ordering, batch, count, args.partitions,
                                             (round_no + 1) * 10 + n, args.max_in_flight)
                rates[mode].append(rate)
                line.append(f"{mode} {rate:,.0f} rec/s ({stats[mode]['requests']} requests, "
                             f"{stats[mode]['retries']} retries)")
            print(f"round {round_no + 1}: " + ", ".join(line), flush=True)
        store.close()
    base = "ordered" if "ordered" in modes else modes[0]
    ratios = {m: median([r / b for r, b in zip(rates[m], rates[base], strict=True)]) for m in modes}
    print(f"median of {args.rounds} rounds (records/s, ratio to {base} in the same round):")
    for mode in modes:
        print(f"  {mode:>16}: {median(rates[mode]):8,.0f} rec/s  x{ratios[mode]:.2f}")
    print(f"partitions={args.partitions} max_in_flight={args.max_in_flight} batch={args.batch}")
    emit_json({"rates": {m: median(v) for m, v in rates.items()}, "ratios": ratios, "base": base,
               "partitions": args.partitions, "max_in_flight": args.max_in_flight, "batch": args.batch,
               "rounds": rates, "stats_last_round": stats})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
