"""Processor throughput: per-event HTTP vs batch HTTP vs the FC Kafka-trigger handler, one run.

- per-event: one binary-mode CloudEvent per POST (KafkaSource's way), ``--threads`` keep-alive
  client connections;
- batch: ``application/cloudevents-batch+json`` POSTs of ``--batch`` events, same connections;
- fc: ``functions.barrage_app.processor(event, context)`` called in this process with a Kafka-trigger batch
  shaped like tests/events/fc_kafka_batch.json holding ``--batch`` records.

The HTTP server is the processor as ``barrage up`` runs it (functions-framework + gunicorn,
THREADS and CONTAINER_CONCURRENCY from the Knative manifest), on its own SQLite file. The HTTP
bodies are what the dispatcher sends (local.kafkasource.mapping on records encoded by the
publisher). Modes alternate within each round; ratios are per round, then the median.

    .venv/bin/python bench/processor.py [--count 20000] [--single-count 3000] [--batch 500] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import BASE_MS, ROOT, KeepAlive, emit_json, median, processor_server, run_threads, work_dir

from functions.adapters.kafka import encode_barrage
from handlers.model import Barrage, new_id
from local.kafka_consumer import ConsumedRecord
from local.kafkasource.mapping import (
    BATCH_CONTENT_TYPE,
    SourceContext,
    batch_body,
    binary_request,
    to_event,
    to_structured,
)

CONTEXT = SourceContext("/apis/v1/namespaces/default/kafkasources/barrage-source")


def make_barrages(count: int, tag: int, rooms: int = 50) -> list[Barrage]:
    return [
        Barrage(new_id(BASE_MS + tag * 10_000_000 + i), f"room-{i % rooms}", f"user-{i % 97}",
                f"benchmark barrage number {i} with some text", BASE_MS + i)
        for i in range(count)
    ]


class HttpEvent:
    """One event as the dispatcher sends it: the binary request, and the batch member."""

    def __init__(self, headers: dict[str, str], body: bytes, member: dict[str, object]) -> None:
        self.headers, self.body, self.member = headers, body, member


def http_events(barrages: list[Barrage]) -> list[HttpEvent]:
    """What the dispatcher makes of the publisher's records."""
    events = []
    for offset, barrage in enumerate(barrages):
        message = encode_barrage(barrage)
        key = message.key.encode() if isinstance(message.key, str) else message.key
        value = message.value.encode() if isinstance(message.value, str) else message.value
        record = ConsumedRecord("barrage-info", 0, offset, key, value, dict(message.headers), BASE_MS + offset)
        event = to_event(record, CONTEXT)
        events.append(HttpEvent(*binary_request(event), to_structured(event)))
    return events


def fc_event(barrages: list[Barrage], first_offset: int) -> bytes:
    """A Kafka-trigger batch as tests/events/fc_kafka_batch.json, with these barrages as records."""
    template = json.loads((ROOT / "tests" / "events" / "fc_kafka_batch.json").read_text())[0]
    items = []
    for n, barrage in enumerate(barrages):
        item = {**template, "id": f"bench-{first_offset + n}"}
        item["data"] = {**template["data"], "offset": first_offset + n, "key": barrage.room,
                        "value": json.dumps(barrage.to_dict())}
        items.append(item)
    return json.dumps(items).encode()


def post_all(url: str, bodies: list[tuple[dict[str, str], bytes]], threads: int, expect: int) -> float:
    """POST every body over ``threads`` keep-alive connections; events stored per second."""
    stored = [0] * threads

    def worker(index: int) -> None:
        client = KeepAlive(url)
        try:
            for headers, body in bodies[index::threads]:
                while True:
                    status, reply = client.request("POST", "/", body, headers)
                    if status == 503:  # queue-proxy's queue full: retry, as the dispatcher does
                        time.sleep(0.01)
                        continue
                    if status != 200:
                        raise RuntimeError(f"processor answered {status}: {reply[:200]!r}")
                    stored[index] += int(json.loads(reply)["ok"])
                    break
        finally:
            client.close()

    elapsed = run_threads(threads, worker)
    if sum(stored) != expect:
        raise RuntimeError(f"stored {sum(stored)} of {expect}")
    return expect / elapsed


def run_fc(bodies: list[bytes], expect: int) -> float:
    from functions import barrage_app

    stored = 0
    started = time.perf_counter()
    for body in bodies:
        result: dict[str, Any] = barrage_app.processor(body, None)
        stored += int(result["ok"])
    elapsed = time.perf_counter() - started
    if stored != expect:
        raise RuntimeError(f"fc stored {stored} of {expect}")
    return expect / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=20000, help="events per round for batch HTTP and FC")
    parser.add_argument("--single-count", type=int, default=3000, help="events per round for per-event HTTP")
    parser.add_argument("--batch", type=int, default=500, help="events per batch request / FC invocation")
    parser.add_argument("--threads", type=int, default=8, help="client connections (dispatcher workers)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--container-concurrency", type=int, default=None,
                        help="processor containerConcurrency (default: the Knative manifest's, as barrage up)")
    args = parser.parse_args(argv)

    rates: dict[str, list[float]] = {"per_event": [], "batch": [], "fc": []}
    with work_dir("bench-processor-") as work:
        from functions import barrage_app

        barrage_app.app.configure({"BARRAGE_DB": str(work / "fc.db"), "BARRAGE_BUS": "memory"})
        with processor_server(work / "http.db", work, args.container_concurrency) as (url, _child):
            # Warm up: connections, SQLite files, first-request imports, FC services.
            warm = make_barrages(200, tag=99)
            post_all(url, [(e.headers, e.body) for e in http_events(warm[:100])], 2, 100)
            warm_batch = batch_body([e.member for e in http_events(warm[100:])])
            post_all(url, [({"content-type": BATCH_CONTENT_TYPE}, warm_batch)], 1, 100)
            run_fc([fc_event(warm, 0)], 200)
            for round_no in range(args.rounds):
                tag = round_no * 3
                single = http_events(make_barrages(args.single_count, tag))
                rates["per_event"].append(post_all(url, [(e.headers, e.body) for e in single], args.threads,
                                                   len(single)))
                events = http_events(make_barrages(args.count, tag + 1))
                members = [e.member for e in events]
                bodies = [({"content-type": BATCH_CONTENT_TYPE}, batch_body(members[i : i + args.batch]))
                          for i in range(0, len(members), args.batch)]
                rates["batch"].append(post_all(url, bodies, min(args.threads, len(bodies)), len(events)))
                fc_barrages = make_barrages(args.count, tag + 2)
                fc_bodies = [fc_event(fc_barrages[i : i + args.batch], i)
                             for i in range(0, len(fc_barrages), args.batch)]
                rates["fc"].append(run_fc(fc_bodies, len(fc_barrages)))
                print(f"round {round_no + 1}: per-event HTTP {rates['per_event'][-1]:,.0f} ev/s, "
                      f"batch HTTP {rates['batch'][-1]:,.0f} ev/s, FC batch {rates['fc'][-1]:,.0f} ev/s",
                      flush=True)
    batch_ratio = median([b / s for b, s in zip(rates["batch"], rates["per_event"], strict=True)])
    fc_ratio = median([f / s for f, s in zip(rates["fc"], rates["per_event"], strict=True)])
    print(f"median of {args.rounds} rounds: per-event HTTP {median(rates['per_event']):,.0f} ev/s, "
          f"batch HTTP {median(rates['batch']):,.0f} ev/s, FC batch {median(rates['fc']):,.0f} ev/s")
    print(f"ratios (median of per-round ratios): batch/per-event {batch_ratio:.1f}x (target >= 10x), "
          f"FC/per-event {fc_ratio:.1f}x; batch={args.batch} threads={args.threads}")
    emit_json({
        "per_event": median(rates["per_event"]), "batch": median(rates["batch"]), "fc": median(rates["fc"]),
        "batch_ratio": batch_ratio, "fc_ratio": fc_ratio, "batch_size": args.batch, "threads": args.threads,
        "rounds": rates,
    })
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
