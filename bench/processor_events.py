"""The processor per event (issue 14): one binary CloudEvent per POST, against a yardstick, one run.

wrk (Debian's ``wrk``), ``--threads`` threads and ``--connections`` keep-alive connections for
``--duration`` s; every request is one binary-mode CloudEvent as a KafkaSource sends it, each
with its own id (a Lua counter per wrk thread), so every one is a new row in SQLite. The
processor runs as ``barrage up`` runs it (functions-framework ``--asgi``, the Knative manifest's
``containerConcurrency``, its own SQLite file), with ``--workers`` worker processes side by
side (1: ``barrage up``'s one instance; 2: the CPU count here, as the container's entrypoint
sizes it). The connections stay within the queue-proxy's admission (``containerConcurrency`` x
11 per worker), so no request is refused with 503. The yardstick is a function that returns
"ok" on functions-framework's default server (Flask under gunicorn gthread), sent the same
request. Rounds alternate; the ratio is per round, then the median. Afterwards each server's
rows are counted against its 2xx answers (nothing answered 200 is missing).

    .venv/bin/python bench/processor_events.py [--duration 10] [--rounds 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import contextlib
import sqlite3
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import emit_json, median, processor_server, work_dir
from homepage import alternating_rounds, round_medians, tree, yardstick

# Each wrk thread numbers its requests; the ids are 26 Crockford base32 characters, as ULIDs.
WRK_SCRIPT = """
local counter = 0
local next_thread = 0
function setup(thread)  -- runs in wrk's main Lua state; sets a global in each thread's own state
  next_thread = next_thread + 1
  thread:set("thread_number", next_thread)
end
request = function()
  counter = counter + 1
  local id = string.format("01KDVQ6F%s%01d%015d", ROUND, thread_number, counter)
  wrk.headers["ce-specversion"] = "1.0"
  wrk.headers["ce-type"] = "barrage.sent"
  wrk.headers["ce-source"] = "/barrage/homepage"
  wrk.headers["ce-id"] = id
  wrk.headers["ce-time"] = "2026-01-01T00:00:00Z"
  wrk.headers["ce-subject"] = "room-1"
  wrk.headers["ce-knativekafkapartition"] = "0"
  wrk.headers["ce-knativekafkaoffset"] = tostring(counter)
  wrk.headers["Content-Type"] = "application/json"
  local body = '{"id":"' .. id .. '","room":"room-1","user":"wrk","text":"one barrage per event","sent_at":'
    .. '1767225600000,"colour":null}'
  return wrk.format("POST", "/", nil, body)
end
"""
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def run_tag(run: int) -> str:
    """Two Crockford digits of its own for each wrk run (up to 1,024), so ids never repeat across runs."""
    return CROCKFORD[run // 32 % 32] + CROCKFORD[run % 32]


def stored_rows(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as connection:
        (count,) = connection.execute("SELECT COUNT(*) FROM barrages").fetchone()
    return int(count)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--container-concurrency", type=int, default=None,
                        help="the processor's CONTAINER_CONCURRENCY (default: its Knative manifest's)")
    args = parser.parse_args(argv)
    workers = [int(w) for w in args.workers.split(",")]
    names = [f"processor-{w}w" for w in workers]
    runs = 0
    with work_dir("bench-processor-events-") as work, contextlib.ExitStack() as stack:
        def script() -> Path:
            nonlocal runs
            path = work / f"events-{runs}.lua"
            path.write_text(WRK_SCRIPT.replace("ROUND", f'"{run_tag(runs)}"'), encoding="utf-8")
            runs += 1
            return path

        urls: dict[str, str] = {}
        processes: dict[str, list[int]] = {}
        databases: dict[str, Path] = {}
        for name, count in zip(names, workers, strict=True):
            (work / name).mkdir()
            databases[name] = work / name / "barrage.db"
            url, child = stack.enter_context(processor_server(databases[name], work / name, workers=count,
                                                                    container_concurrency=args.container_concurrency))
            urls[name], processes[name] = url, tree(child.process.pid)
        stick, stick_child = stack.enter_context(yardstick(work))
        urls["yardstick"], processes["yardstick"] = stick + "/", tree(stick_child.process.pid)
        rounds, answered = alternating_rounds(urls, processes, script, args, names)
        stack.close()  # the servers stop: every accepted write is in its file
        rows = {name: stored_rows(databases[name]) for name in names}
    # A request cut off when wrk stops may be stored without being counted: at most one per connection.
    slack = args.connections * (args.rounds + 1)
    consistent = all(answered[n] <= rows[n] <= answered[n] + slack for n in names)
    for name in names:
        print(f"{name}: {answered[name]:,} answered 2xx, {rows[name]:,} rows stored", flush=True)
    print(f"stored vs answered: {'consistent' if consistent else 'INCONSISTENT'} (at most {slack} uncounted "
          f"in-flight per server)", flush=True)
    per_config = {
        name: {
            **round_medians(rounds, name), "workers": count,
            "cpu_ms_per_request": median([r[name]["cpu_ms_per_request"].get(name, 0.0) for r in rounds]),
            "answered": answered[name], "stored": rows[name],
        }
        for name, count in zip(names, workers, strict=True)
    }
    emit_json({
        "processor": per_config,
        "yardstick": median([r["yardstick"]["rate"] for r in rounds]),
        "yardstick_cpu_ms_per_request": median([r["yardstick"]["cpu_ms_per_request"].get("yardstick", 0.0)
                                                for r in rounds]),
        "consistent": consistent, "threads": args.threads, "connections": args.connections,
        "duration_s": args.duration, "rounds": rounds,
    })
    return 0 if consistent else 1


if __name__ == "__main__":
    sys.exit(main())
