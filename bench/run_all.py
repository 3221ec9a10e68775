"""Run every benchmark and rewrite BENCHMARKS.md with the machine, the commands and the figures.

    .venv/bin/python bench/run_all.py [--output BENCHMARKS.md] [--quick]

Each benchmark runs as its own process (``sys.executable bench/<name>.py ...``); its output is
captured verbatim into the report, and the ``RESULT {...}`` line the new ones print feeds the
tables. ``--quick`` shrinks the workloads (a smoke run; the figures are then not comparable).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import ROOT, descendants, machine

BENCH = Path(__file__).resolve().parent


def plan(quick: bool) -> list[tuple[str, list[str]]]:
    if quick:
        return [
            ("cold_start", ["--runs", "3"]),
            ("fc_import", ["--runs", "3"]),
            ("processor", ["--count", "5000", "--single-count", "1000", "--rounds", "1"]),
            ("dispatcher", ["--count", "1000", "--batch-count", "5000", "--rounds", "1"]),
            ("e2e", ["--count", "3000", "--duration", "3"]),
            ("kafka_publish", ["--count", "5000", "--rounds", "1"]),
            ("kafka_encode", ["--count", "5000", "--rounds", "1"]),
            ("tablestore_put", ["--count", "2000"]),
            ("homepage", ["--duration", "3", "--rounds", "1", "--viewers", "200", "--marks", "2"]),
            ("processor_events", ["--duration", "3", "--rounds", "1"]),
            ("sink_client", ["--count", "300", "--rounds", "1"]),
            ("half_open", ["--probes", "100", "--yardstick-probes", "2"]),
            ("page", ["--runs", "1"]),
        ]
    return [
        ("cold_start", ["--runs", "9"]),
        ("fc_import", ["--runs", "9"]),
        ("processor", ["--rounds", "3"]),
        ("dispatcher", ["--rounds", "2"]),
        ("e2e", ["--count", "10000", "--duration", "10", "--profile"]),
        ("kafka_publish", ["--rounds", "3"]),
        ("kafka_encode", []),
        ("tablestore_put", []),
        ("homepage", ["--duration", "10", "--rounds", "3", "--viewers", "1000", "--marks", "5"]),
        ("processor_events", ["--duration", "10", "--rounds", "3"]),
        ("sink_client", ["--rounds", "3"]),
        ("half_open", ["--connections", "300", "--probes", "300"]),
        ("page", ["--runs", "3"]),
    ]


def run(name: str, extra: list[str]) -> tuple[list[str], str, dict[str, Any] | None, float, int]:
    argv = [sys.executable, str(BENCH / f"{name}.py"), *extra]
    print(f"$ {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=900)
    elapsed = time.monotonic() - started
    result = None
    lines = []
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result = json.loads(line[len("RESULT "):])
        else:
            lines.append(line)
    output = "\n".join(lines)
    if done.returncode != 0:
        output += f"\n[exit {done.returncode}]\n" + done.stderr[-3000:]
    print(output, flush=True)
    return argv, output, result, elapsed, done.returncode


def command_text(argv: list[str]) -> str:
    return shlex.join([".venv/bin/python", *(str(Path(a).relative_to(ROOT)) if a.startswith(str(ROOT)) else a
                                             for a in argv[1:])])


def _f(value: Any, digits: int = 0) -> str:
    return "n/a" if value is None else f"{value:,.{digits}f}"


def targets(results: dict[str, dict[str, Any] | None]) -> list[tuple[str, str, str, str]]:
    rows = []
    processor = results.get("processor")
    if processor:
        ratio = processor["batch_ratio"]
        # Since issue 14 per-event requests that wait are combined into one store write, so the
        # per-event side moved towards batch; both figures are given to show which side moved.
        rows.append(("processor batch vs per-event HTTP", ">= 10x",
                     f"{ratio:.2f}x (batch {_f(processor['batch'])}/s, per-event {_f(processor['per_event'])}/s)",
                     "met" if ratio >= 10 else "NOT met"))
    e2e = results.get("e2e")
    if e2e:
        for mode in e2e["modes"]:
            if mode["batch_size"]:
                rate = mode["stored_per_s"]
                rows.append((f"e2e stored/s, batch {mode['batch_size']} delivery", ">= 5,000/s", _f(rate),
                             "met" if rate >= 5000 else "NOT met"))
                for figures in mode["latency"]:
                    if figures["rate"] == 500:
                        rows.append(("p99 send->stored at 500/s (batch delivery)", "<= 100 ms",
                                     f"{figures['p99']:.0f} ms", "met" if figures["p99"] <= 100 else "NOT met"))
            else:
                for figures in mode["latency"]:
                    if figures["rate"] == 1000:
                        rows.append(("p99 send->stored at 1,000/s (per-event delivery, barrage up defaults)",
                                     "<= 100 ms", f"{figures['p99']:.0f} ms",
                                     "met" if figures["p99"] <= 100 else "NOT met"))
    home = results.get("homepage")
    if home:
        for figures in home["post"]["homepage"].values():
            workers = figures["workers"]
            rows.append((f"HomePage single-barrage POST (Kafka, acks=all), {workers} worker{'s' * (workers > 1)}, "
                         "vs do-nothing functions-framework function (default server)", ">= 1.5x",
                         f"{figures['ratio']:.2f}x", "met" if figures["ratio"] >= 1.5 else "NOT met"))
        viewers = home["viewers"]
        reached = viewers["reached_within_2s"]
        rows.append((f"SSE viewers of one room on one HomePage process ({viewers['connected']:,} connected): "
                     "reached within 2 s", ">= 95% of >= 1,000", f"{reached:.1%}",
                     "met" if reached >= 0.95 and viewers["connected"] >= 1000 else "NOT met"))
        per_viewer = viewers["rss_per_viewer_kb"]
        rows.append(("HomePage RSS growth per SSE viewer", "<= 50 KB", f"{per_viewer:.1f} KB",
                     "met" if per_viewer <= 50 else "NOT met"))
    events = results.get("processor_events")
    if events:
        for figures in events["processor"].values():
            workers = figures["workers"]
            rows.append((f"processor per event (binary CloudEvent, unique ids, SQLite), {workers} worker"
                         f"{'s' * (workers > 1)}, vs do-nothing functions-framework function (default server)",
                         ">= 2.0x", f"{figures['ratio']:.2f}x", "met" if figures["ratio"] >= 2.0 else "NOT met"))
    half = results.get("half_open")
    if half:
        held, closed = half["held"], half["closes"]["silent"]
        rows.append((f"with {half['connections']} half-open connections, /healthz answers within 100 ms",
                     "p99 <= 100 ms, no probe fails",
                     f"p50 {_f(held['p50_ms'], 1)} / p99 {_f(held['p99_ms'], 1)} / max {_f(held['max_ms'], 1)} ms, "
                     f"{held['failures']} failed of {held['probes']}; the half-open closed (408) after "
                     f"{_f(closed['median_s'], 1)} s", "met" if half["met"] else "NOT met"))
    page = results.get("page")
    if page:
        rows.append(("the page's own load run (its defaults), headless Chromium, `barrage up` defaults: p99 latency on "
                     "the page's counter (median of runs)", "<= 300 ms", f"{_f(page['p99_ms'])} ms",
                     "met" if page["met"] else "NOT met"))
    cold = results.get("cold_start")
    if cold:
        for entry in cold["entries"]:  # what FC imports before it can answer (bench/cold_start.py)
            ms = cold["ms"][entry]
            rows.append((f"FC entry, {entry}", "<= 150 ms", f"{_f(ms, 1)} ms",
                         "met" if ms is not None and ms <= cold["target_ms"] else "NOT met"))
    return rows


def tables(results: dict[str, dict[str, Any] | None]) -> list[str]:
    out: list[str] = []
    processor = results.get("processor")
    if processor:
        out += ["### Processor throughput (issue 4)", "",
                "| path | events/s (median) | ratio to per-event (median of per-round ratios) |", "|---|---:|---:|",
                f"| per-event HTTP (binary CloudEvent per POST) | {_f(processor['per_event'])} | 1.0x |",
                f"| batch HTTP ({processor['batch_size']} per POST) | {_f(processor['batch'])} "
                f"| {processor['batch_ratio']:.1f}x |",
                f"| FC handler in-process ({processor['batch_size']} records per event) | {_f(processor['fc'])} "
                f"| {processor['fc_ratio']:.1f}x |", ""]
    dispatcher = results.get("dispatcher")
    if dispatcher:
        out += ["### Dispatcher throughput against the real processor (issue 4)", "",
                f"| mode | records/s (median) | ratio to {dispatcher['base']} (same round) |", "|---|---:|---:|"]
        for mode, rate in dispatcher["rates"].items():
            out.append(f"| {mode} | {_f(rate)} | {dispatcher['ratios'][mode]:.2f}x |")
        out.append("")
    e2e = results.get("e2e")
    if e2e:
        out += ["### End to end (issue 10)", "",
                "| delivery | accepted/s | stored/s | raw Kafka produce+consume/s | stored / raw |",
                "|---|---:|---:|---:|---:|"]
        for mode in e2e["modes"]:
            name = f"batch {mode['batch_size']}" if mode["batch_size"] else "per event"
            out.append(f"| {name} | {_f(mode['accepted_per_s'])} | {_f(mode['stored_per_s'])} | "
                       f"{_f(mode['raw_per_s'])} | {mode['ratio_to_raw']:.3f} |")
        modes = e2e["modes"]
        if len(modes) == 2 and not modes[0]["batch_size"]:
            out.append("")
            speedup = modes[1]["stored_per_s"] / modes[0]["stored_per_s"]
            out.append(f"Batch / per-event stored throughput: {speedup:.1f}x.")
        out += ["", "Send -> stored latency, open loop (ms):", "",
                "| delivery | offered /s | p50 | p95 | p99 | max | until 202: p50 / p99 |",
                "|---|---:|---:|---:|---:|---:|---:|"]
        for mode in modes:
            name = f"batch {mode['batch_size']}" if mode["batch_size"] else "per event"
            for f in mode["latency"]:
                out.append(f"| {name} | {f['rate']:,.0f} | {f['p50']:.0f} | {f['p95']:.0f} | {f['p99']:.0f} | "
                           f"{f['max']:.0f} | {f['accept_p50']:.0f} / {f['accept_p99']:.0f} |")
        out += ["", "CPU seconds per process during the throughput run:", "",
                "| delivery | homepage | processor | dispatcher | broker | load generator |",
                "|---|---:|---:|---:|---:|---:|"]
        for mode in modes:
            name = f"batch {mode['batch_size']}" if mode["batch_size"] else "per event"
            cpu = mode["cpu_s"]
            out.append(f"| {name} | " + " | ".join(
                f"{cpu.get(k, 0.0):.1f}" for k in ("homepage", "processor", "dispatcher", "broker",
                                                    "load generator (this process)")) + " |")
        out.append("")
    encode = results.get("kafka_encode")
    if encode:
        out += ["### Kafka record encoding: hand-written vs the cloudevents SDK (issue 13)", "",
                "| case | SDK to_binary rec/s | encode_barrage rec/s | ratio (median of per-round) |",
                "|---|---:|---:|---:|"]
        for case, figures in encode["cases"].items():
            out.append(f"| {case} | {_f(figures['sdk_per_s'])} | {_f(figures['own_per_s'])} | "
                       f"{figures['ratio']:.2f}x |")
        out.append("")
    home = results.get("homepage")
    if home:
        post = home["post"]
        out += ["### HomePage at scale (issue 14)", "",
                f"Single-barrage POSTs, wrk {post['threads']} threads, {post['connections']} connections, "
                f"{post['duration_s']:g} s per run, rounds alternating (median of per-round figures); every 202 "
                f"after the broker's acknowledgement (acks=all): {post['answered']:,} answered, {post['in_topic']:,} "
                f"records in the topic ({'consistent' if post['consistent'] else 'INCONSISTENT'}).", "",
                "| server | req/s | ratio to yardstick | p50 ms | p99 ms | CPU ms/request (server, broker) |",
                "|---|---:|---:|---:|---:|---:|",
                f"| yardstick: do-nothing function, functions-framework default (Flask, gunicorn gthread) | "
                f"{_f(post['yardstick'])} | 1.00x | | | {post['yardstick_cpu_ms_per_request']:.2f} |"]
        for name, figures in post["homepage"].items():
            cpu = figures["cpu_ms_per_request"]
            out.append(f"| HomePage, functions-framework --asgi, {figures['workers']} worker(s) | "
                       f"{_f(figures['rate'])} | {figures['ratio']:.2f}x | {figures['p50_ms']:.1f} | "
                       f"{figures['p99_ms']:.1f} | {cpu.get(name, 0.0):.2f}, {cpu.get('broker', 0.0):.2f} |")
        viewers = home["viewers"]
        out += ["", f"{viewers['connected']:,} of {viewers['viewers']:,} SSE viewers of one room on one HomePage "
                f"process, connected in {viewers['connected_in_s']:.1f} s; worker RSS "
                f"{viewers['rss_baseline_kb'] / 1024:.1f} MiB before, {viewers['rss_loaded_kb'] / 1024:.1f} MiB "
                f"after ({viewers['rss_per_viewer_kb']:.1f} KB per viewer).", "",
                "| barrage | viewers reached within 2 s | p50 ms | p99 ms | max ms |", "|---:|---:|---:|---:|---:|"]
        for n, mark in enumerate(viewers["marks"], 1):
            out.append(f"| {n} | {mark['within_2s']:,} ({mark['within_2s'] / viewers['viewers']:.1%}) | "
                       f"{_f(mark['p50_ms'])} | {_f(mark['p99_ms'])} | {_f(mark['max_ms'])} |")
        out.append("")
    events = results.get("processor_events")
    if events:
        out += ["### Processor per event (issue 14)", "",
                f"One binary CloudEvent per POST, unique ids, wrk {events['threads']} threads, {events['connections']} "
                f"connections (within the queue-proxy's admission), {events['duration_s']:g} s per run, rounds "
                "alternating; rows stored vs 2xx answered: "
                f"{'consistent' if events['consistent'] else 'INCONSISTENT'}.",
                "", "| server | req/s | ratio to yardstick | p50 ms | p99 ms | CPU ms/request | answered / stored |",
                "|---|---:|---:|---:|---:|---:|---:|",
                f"| yardstick: do-nothing function, functions-framework default (Flask, gunicorn gthread) | "
                f"{_f(events['yardstick'])} | 1.00x | | | {events['yardstick_cpu_ms_per_request']:.2f} | |"]
        for figures in events["processor"].values():
            out.append(f"| processor, functions-framework --asgi, {figures['workers']} worker(s) | "
                       f"{_f(figures['rate'])} | {figures['ratio']:.2f}x | {figures['p50_ms']:.1f} | "
                       f"{figures['p99_ms']:.1f} | {figures['cpu_ms_per_request']:.2f} | "
                       f"{figures['answered']:,} / {figures['stored']:,} |")
        out.append("")
    client = results.get("sink_client")
    if client:
        out += ["### The dispatcher's HTTP client (issue 14)", "",
                "| client | client CPU per POST (us, median) |", "|---|---:|",
                f"| http.client | {client['http_client_us']:.0f} |",
                f"| local.kafkasource.sink_client | {client['sink_client_us']:.0f} ({client['ratio']:.1f}x less) |",
                ""]
    half = results.get("half_open")
    if half:
        out += [f"### /healthz with {half['connections']} half-open connections held (issue 14)", "",
                "Probes: a new connection each, `GET /healthz`, connect to last byte; the HomePage as `barrage up` "
                "runs it (one worker, default limits). Half of the half-open connections trickle a header byte a "
                f"second. Load average {half['load_before'][0]:.1f} before the run.", "",
                "| server, state | probes | failed | p50 ms | p99 ms | max ms |", "|---|---:|---:|---:|---:|---:|"]
        for name, figures in (("HomePage, nothing else open (same run)", half["idle"]),
                              (f"HomePage, {half['connections']} half-open held", half["held"])):
            out.append(f"| {name} | {figures['probes']} | {figures['failures']} | {_f(figures['p50_ms'], 1)} | "
                       f"{_f(figures['p99_ms'], 1)} | {_f(figures['max_ms'], 1)} |")
        stick = half.get("yardstick")
        if stick:
            out.append(f"| yardstick: do-nothing function, functions-framework default (Flask, gunicorn gthread), "
                       f"{half['connections']} half-open held | {stick['held']['probes']} | "
                       f"{stick['held']['failures']} (no answer within {stick['timeout_s']:g} s) | | | |")
        out += ["", "| half-open group | closed by the server | answered 408 | closed after (min / median / max s) |",
                "|---|---:|---:|---:|"]
        for name, group in half["closes"].items():
            out.append(f"| {name} | {group['closed']} of {group['count']} | {group['answered_408']} | "
                       f"{_f(group['min_s'], 1)} / {_f(group['median_s'], 1)} / {_f(group['max_s'], 1)} |")
    page = results.get("page")
    if page:
        out += ["### The page's own load run in headless Chromium (issue 14)", "",
                "Each run: a fresh page on `/`, the load run's Send pressed with the form's defaults, the figures read "
                "off the page once the stage settled; the split is of the barrages the page showed (ms); the "
                "yardstick is one barrage typed in at idle, just before.", "",
                "| run | loadavg | accepted/s | stored/s | received | shown | skipped | counter p50 | counter p99 | "
                "send->stored p99 | stored->received p99 (at a plain SSE client, all barrages) | received->shown p99 | "
                "yardstick |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for n, run in enumerate(page["runs"], 1):
            p, split = run["page"], run["split"]
            out.append(f"| {n} | {run['loadavg_1m']:.1f} | {_f(run['server']['throughput'])} | "
                       f"{_f(run['server']['stored_per_s'])} | {p['received']:,} | {p['shown']:,} | {p['skipped']:,}"
                       f"{'' if p['complete'] else ' (INCOMPLETE)'} | {_f(p['p50_ms'])} | {_f(p['p99_ms'])} | "
                       f"{_f(split['send_stored']['p99'])} | {_f(split['stored_received']['p99'])} "
                       f"({_f(run['stored_streamed']['p99'])}) | {_f(split['received_shown']['p99'])} | "
                       f"{_f(run['idle']['page_ms'])} |")
        out.append("")
    cold = results.get("cold_start")
    if cold:
        out += ["### Cold start: what each FC entry imports (issues 10, 14)", "",
                "| entry [where] | wall ms | CPU ms | vs functions_framework | through the first answer, ms |",
                "|---|---:|---:|---:|---:|"]
        for entry, figures in cold["figures"].items():
            out.append(f"| {entry} | {_f(figures['wall_ms'], 1)} | {_f(figures['cpu_ms'], 1)} | "
                       f"{figures['ratio_to_ff']:.2f}x | {_f(figures['first_answer_ms'], 1)} |")
        out.append("")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="small workloads (smoke run)")
    parser.add_argument("--only", default="", help="comma-separated subset of the benchmarks")
    args = parser.parse_args(argv)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    started = datetime.datetime.now().astimezone()
    info = machine()
    runs = []
    results: dict[str, dict[str, Any] | None] = {}
    for name, extra in plan(args.quick):
        if only and name not in only:
            continue
        argv_, output, result, elapsed, code = run(name, extra)
        runs.append((name, argv_, output, elapsed, code))
        results[name] = result
    leftovers = descendants(os.getpid())
    total = (datetime.datetime.now().astimezone() - started).total_seconds()

    doc = ["# Benchmarks", "",
           f"Generated by `.venv/bin/python bench/run_all.py{' --quick' if args.quick else ''}` on "
           f"{started:%Y-%m-%d %H:%M %Z} ({total / 60:.1f} min). Do not edit by hand: rerun it.", "",
           "## Machine", "",
           f"- nproc: {info['nproc']}", f"- CPU: {info['cpu']}", f"- memory: {info['memory']}",
           f"- Python: {info['python']} ({info['platform']})", "",
           "The machine is shared and noisy (2 cores; other test runs may be active). Absolute figures move from "
           "run to run; the ratios are measured within one run (alternating rounds, same stack, same moment) "
           "and are the figures to compare.", "",
           "## Targets", "", "| target | wanted | measured | |", "|---|---|---|---|"]
    doc += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in targets(results)]
    doc += ["", "## Figures", "", *tables(results)]
    doc += ["## Commands and raw output", ""]
    for name, argv_, output, elapsed, code in runs:
        status = "" if code == 0 else f" — exit {code}"
        doc += [f"### {name} ({elapsed:.0f} s{status})", "", "```", f"$ {command_text(argv_)}", output.rstrip(),
                "```", ""]
    doc += [f"Processes left behind by the benchmarks: {len(leftovers) or 'none'}.", ""]
    args.output.write_text("\n".join(doc))
    print(f"wrote {args.output} ({total:.0f} s); leftover child processes: {leftovers or 'none'}")
    return 0 if all(code == 0 for *_, code in runs) else 1


if __name__ == "__main__":
    raise SystemExit(main())
