"""The dispatcher's HTTP client vs ``http.client``: client CPU per keep-alive POST, one run.

Both clients POST the same binary CloudEvent ``--count`` times over one kept-alive connection to
the processor as ``barrage up`` runs it (each event a new id, so each is stored); rounds
alternate, and the figure is this process's CPU time per request (the server's work is not in
it), median of the rounds.

    .venv/bin/python bench/sink_client.py [--count 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import http.client
import sys
import time
import urllib.parse
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import emit_json, median, processor_server, work_dir

from local.kafkasource.sink_client import SinkClient

HEADERS = {"ce-specversion": "1.0", "ce-type": "barrage.sent", "ce-source": "/barrage/homepage",
           "content-type": "application/json"}


def event(prefix: str, n: int) -> tuple[dict[str, str], bytes]:
    ident = f"01KDVQ6F{prefix}{n:016d}"
    body = (f'{{"id":"{ident}","room":"room-1","user":"bench","text":"one barrage per event",'
            f'"sent_at":1767225600000,"colour":null}}').encode()
    return {**HEADERS, "ce-id": ident}, body


def with_http_client(url: str, prefix: str, count: int) -> float:
    parsed = urllib.parse.urlsplit(url)
    connection = http.client.HTTPConnection(parsed.hostname or "127.0.0.1", parsed.port, timeout=30)
    requests = [event(prefix, n) for n in range(count)]
    started = time.process_time()
    for headers, body in requests:
        connection.request("POST", "/", body=body, headers={**headers, "content-length": str(len(body))})
        response = connection.getresponse()
        response.read()
        if response.status != 200:
            raise RuntimeError(f"http.client: {response.status}")
    used = time.process_time() - started
    connection.close()
    return used / count


def with_sink_client(url: str, prefix: str, count: int) -> float:
    client = SinkClient(30)
    requests = [event(prefix, n) for n in range(count)]
    started = time.process_time()
    for headers, body in requests:
        reply = client.post(url, headers, body)
        if reply.status != 200:
            raise RuntimeError(f"sink client: {reply.status}")
    return (time.process_time() - started) / count


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    figures: dict[str, list[float]] = {"http.client": [], "sink_client": []}
    with work_dir("bench-sink-client-") as work, processor_server(work / "p.db", work) as (url, _child):
        with_sink_client(url, "W0", 200)  # warm-up
        for index in range(args.rounds):
            order = [("http.client", with_http_client), ("sink_client", with_sink_client)]
            if index % 2:
                order.reverse()
            for name, run in order:
                figures[name].append(run(url, f"{'HS'[name == 'sink_client']}{index}", args.count) * 1e6)
            print(f"round {index + 1}: http.client {figures['http.client'][-1]:.0f} us, "
                  f"sink_client {figures['sink_client'][-1]:.0f} us client CPU per request", flush=True)
    ours, theirs = median(figures["sink_client"]), median(figures["http.client"])
    print(f"median: http.client {theirs:.0f} us, sink_client {ours:.0f} us ({theirs / ours:.1f}x less CPU)")
    emit_json({"http_client_us": theirs, "sink_client_us": ours, "ratio": theirs / ours, "count": args.count})
    return 0


if __name__ == "__main__":
    sys.exit(main())
