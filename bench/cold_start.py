"""Cold start on Function Compute: what each FC entry imports before it can answer, vs functions-framework.

Each entry is measured the way FC starts it, in fresh interpreters:

- ``processor`` (runtime python3.10, handler ``functions.barrage_app.processor``): FC's runtime
  imports ``functions.barrage_app``;
- ``homepage`` (runtime custom.debian10): ``bootstrap`` runs ``python3 -m functions.entrypoint``
  with WORKLOAD_CLASS=fc, which loads the app and runs uvicorn on
  ``functions.serve:container_factory``. The probe runs that real ``main()``; the figure ends where
  uvicorn would start the lifespan and bind CAPort (``uvicorn.Server.startup`` is the stop).
  ``uvicorn alone`` is what uvicorn loads for an empty app (its loop, HTTP parser and lifespan):
  the third-party floor under the homepage figure.

Where: the FC code package as ``barrage build`` makes it (``local.build.build_fc_package``, offline
from the wheelhouse), unpacked and run from its root by CPython 3.10 (FC's version) with bytecode
writes off, as on FC (its ``/code`` is read-only): with the package's bytecode, and a copy without
it (sources only, how packages were built before). Without a Python 3.10 or the wheelhouse, this
virtualenv stands in (its ``.pth`` start-up hooks skipped), and says so.

``first answer`` (informative, no target): the same run carried on through FC's initializer and
one request (processor: an EventBridge Kafka batch; homepage: ``/initialize`` and
``GET /api/barrages`` through uvicorn's loaded app), with local adapters (SQLite, in-process bus).

Yardstick, in this virtualenv in the same rounds: ``import functions_framework``, and
``functions.main`` (the Knative source). Rounds interleave every probe; figures are medians of
wall time (the verdict) and of the process's CPU time (less sensitive to a loaded machine).

    .venv/bin/python bench/cold_start.py [--runs 9] [--target-ms 150] [--dev] [--code DIR]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import ROOT, emit_json

EVENT = ROOT / "tests" / "events" / "fc_kafka_batch.json"
_RUN_NUMBERS = itertools.count()

TIMED = """
import json, sys, time
wall0, cpu0 = time.perf_counter(), time.process_time()
def mark():
    return [(time.perf_counter() - wall0) * 1000, (time.process_time() - cpu0) * 1000]
"""

PROCESSOR = TIMED + """
import functions.barrage_app as entry
marks = [mark()]
if FIRST:
    import types
    context = types.SimpleNamespace(request_id="cold-start-1", credentials=None, region="local",
                                    function=types.SimpleNamespace(name="processor"))
    entry.initializer(context)
    with open(EVENT, "rb") as event:
        report = entry.processor(event.read(), context)
    assert report["ok"] == 2, report
    marks.append(mark())
print(json.dumps(marks))
"""

# The entrypoint's real main(); uvicorn's startup (lifespan, then the bind) is where it stops.
HOMEPAGE = TIMED + """
import uvicorn.server

class Ready(Exception):
    pass

async def startup(self, sockets=None):
    marks.append(mark())
    if FIRST:
        from functions.asgi import HttpRequest, call
        def request(method, path, query, control):
            return HttpRequest(method, path, path, query, [("x-fc-control-path", control),
                               ("x-fc-request-id", "cold-start-1")], b"", ("127.0.0.1", 1))
        for req in (request("POST", "/initialize", "", "/initialize"),
                    request("GET", "/api/barrages", "room=cold", "/http-invoke")):
            response = await call(self.config.loaded_app, req)
            assert response.status == 200, (req.path, response.status, response.body[:300])
        marks.append(mark())
    raise Ready

marks = []
uvicorn.server.Server.startup = startup
import functions.entrypoint
try:
    functions.entrypoint.main()
except Ready:
    print(json.dumps(marks))
"""

# What uvicorn loads for any app (its protocol, lifespan and loop picks), an empty one here.
UVICORN = TIMED + """
import uvicorn.main
from uvicorn.config import Config

async def empty(scope, receive, send):
    pass

config = Config(empty, lifespan="on", log_level="warning", access_log=False)
config.load()
loop = (config.get_loop_factory() or __import__("asyncio").new_event_loop)()
loop.close()
print(json.dumps([mark()]))
"""

YARDSTICK = TIMED + """
import {module}
print(json.dumps([mark()]))
"""


@dataclass(frozen=True)
class Where:
    """An interpreter, the directory it runs in and the lines that start each probe there."""

    name: str
    python: str
    cwd: Path
    prelude: str  # before the timer starts


@dataclass(frozen=True)
class Probe:
    label: str
    where: Where
    code: str
    fc: bool  # an FC entry (gets FC's environment; judged against the target)


def dev_prelude() -> str:
    """This virtualenv as an FC package would see it: the repository and site-packages on the path,
    without the ``.pth`` hooks (the editable install's finder pre-imports pathlib, re...)."""
    site_packages = sysconfig.get_paths()["purelib"]
    return f"import site, sys\nsys.path[:0] = [{str(ROOT)!r}]\nsys.path.append({site_packages!r})\n"


def fc_package(code: Path | None, scratch: Path) -> tuple[list[Where], str]:
    """The unpacked package, with and without its bytecode, for Python 3.10; or why not."""
    from local.build import BuildError, build_fc_package, default_wheelhouse, target_python

    python = target_python("3.10")
    if python is None:
        return [], "no Python 3.10 on this machine"
    if code is None:
        wheelhouse = default_wheelhouse("3.10")
        if not any(wheelhouse.glob("*.whl")):
            return [], f"no wheelhouse at {wheelhouse} (barrage build --workload-class fc --download-only)"
        try:
            result = build_fc_package(scratch / "fc.zip", wheelhouse, "3.10", fetch=False)
        except BuildError as exc:
            return [], f"the package did not build: {exc}"
        if not result.bytecode:
            return [], "the package was built without bytecode"
        code = scratch / "code"
        with zipfile.ZipFile(result.path) as archive:
            archive.extractall(code)
    sources = scratch / "sources"
    shutil.copytree(code, sources, ignore=shutil.ignore_patterns("__pycache__"))
    return [Where("package", python, code, ""), Where("package, sources only", python, sources, "")], ""


def environment(scratch: Path, fc: bool) -> dict[str, str]:
    """A clean environment; FC entries get s.yaml's homepage settings and, for the first answer, the
    local adapters (a new SQLite file each run, so every run stores the same records afresh)."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "PYTHONDONTWRITEBYTECODE": "1"}
    if fc:
        database = scratch / f"barrage-{next(_RUN_NUMBERS)}.db"
        env.update(FUNCTIONS_APP="functions.barrage_app", FUNCTION_TARGET="homepage", WORKLOAD_CLASS="fc",
                   WORKERS="1", HOST="127.0.0.1", FC_SERVER_PORT="9000", BARRAGE_BUS="memory",
                   BARRAGE_DB=str(database))
    return env


def source(probe: Probe, first: bool) -> str:
    return f"{probe.where.prelude}FIRST = {first!r}\nEVENT = {str(EVENT)!r}\n{probe.code}"


def run_once(probe: Probe, scratch: Path) -> list[list[float]]:
    done = subprocess.run([probe.where.python, "-c", source(probe, first=probe.fc)], cwd=probe.where.cwd,
                          env=environment(scratch, probe.fc), capture_output=True, text=True, timeout=300)
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"{probe.label} ({probe.where.name}) failed:\n{done.stderr[-2000:]}")
    marks: list[list[float]] = json.loads(done.stdout.strip().splitlines()[-1])
    return marks


def by_distribution(rows: list[tuple[str, float, float]], top: int) -> list[tuple[str, float]]:
    """Self ms summed per top-level package (``functions`` and ``handlers`` are this project's)."""
    sums: dict[str, float] = {}
    for name, own, _ in rows:
        sums[name.split(".")[0]] = sums.get(name.split(".")[0], 0.0) + own
    return sorted(sums.items(), key=lambda item: -item[1])[:top]


def heaviest_imports(probe: Probe, scratch: Path) -> list[tuple[str, float, float]]:
    """(module, self ms, cumulative ms) of every import of one run, costliest first, from ``-X importtime``."""
    done = subprocess.run([probe.where.python, "-X", "importtime", "-c", source(probe, first=False)],
                          cwd=probe.where.cwd, env=environment(scratch, probe.fc), capture_output=True, text=True,
                          timeout=300)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append((name, int(own) / 1000, int(cumulative) / 1000))
    return sorted(rows, key=lambda row: -row[1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--target-ms", type=float, default=150.0)
    parser.add_argument("--top", type=int, default=8)
    parser.add_argument("--dev", action="store_true", help="measure this virtualenv only (no package build)")
    parser.add_argument("--code", type=Path, default=None, help="an unpacked FC package to measure (no build)")
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="barrage-cold-") as tmp:
        scratch = Path(tmp)
        places, why_not = ([], "--dev") if args.dev else fc_package(args.code, scratch)
        dev = Where("this virtualenv", sys.executable, ROOT, dev_prelude())
        places = places or [dev]
        probes = []
        for where in places:
            probes += [Probe("processor: import functions.barrage_app", where, PROCESSOR, True),
                       Probe("homepage: entrypoint + uvicorn, to startup", where, HOMEPAGE, True),
                       Probe("uvicorn alone (an empty app)", where, UVICORN, False)]
        probes += [Probe("import functions.main", dev, YARDSTICK.format(module="functions.main"), False),
                   Probe("import functions_framework", dev, YARDSTICK.format(module="functions_framework"), False)]
        samples: dict[Probe, list[list[list[float]]]] = {probe: [] for probe in probes}
        for _ in range(args.runs):
            for probe in probes:  # interleaved: a burst of load hits every probe alike
                samples[probe].append(run_once(probe, scratch))
        load_after = os.getloadavg()

        def med(probe: Probe, index: int, kind: int) -> float:
            return statistics.median(run[index][kind] for run in samples[probe])

        baseline = next(p for p in probes if p.label == "import functions_framework")
        yard = med(baseline, 0, 0)
        print(f"where: {places[0].name} ({places[0].python}){'' if not why_not else f'; package not used: {why_not}'}")
        print(f"{'':<48} {'wall ms':>8} {'cpu ms':>7} {'vs ff':>6} {'first answer':>13}")
        figures: dict[str, dict[str, float | None]] = {}
        heavy: dict[str, list[tuple[str, float, float]]] = {}
        for probe in probes:
            key = f"{probe.label} [{probe.where.name}]"
            wall, cpu = med(probe, 0, 0), med(probe, 0, 1)
            first = med(probe, 1, 0) if probe.fc else None
            figures[key] = {"wall_ms": wall, "cpu_ms": cpu, "first_answer_ms": first, "ratio_to_ff": wall / yard}
            verdict = ("  (met)" if wall <= args.target_ms else "  (NOT met)") if probe.fc else ""
            first_text = f"{first:10.1f} ms" if first is not None else ""
            print(f"{key:<48} {wall:8.1f} {cpu:7.1f} {wall / yard:5.2f}x {first_text:>13}{verdict}")
            if probe.fc and wall > args.target_ms and probe.where is places[0]:
                rows = heaviest_imports(probe, scratch)
                heavy[key] = rows[:args.top]
                for name, own, cumulative in heavy[key]:
                    print(f"{'':>8}{own:6.1f} ms self, {cumulative:6.1f} ms cumulative: {name}")
                print(f"{'':>8}self ms by package: "
                      + ", ".join(f"{name} {ms:.1f}" for name, ms in by_distribution(rows, args.top)))
    print(f"medians of {args.runs} interleaved rounds of fresh interpreters; target <= {args.target_ms:.0f} ms "
          f"per FC entry (wall); load average {load_before[0]:.2f} before, {load_after[0]:.2f} after "
          f"({os.cpu_count()} CPUs)")
    entries = [f"{p.label} [{p.where.name}]" for p in probes if p.fc and p.where is places[0]]
    emit_json({"ms": {key: value["wall_ms"] for key, value in figures.items()}, "figures": figures,
               "entries": entries, "where": places[0].name, "package_not_used": why_not, "runs": args.runs,
               "target_ms": args.target_ms, "heaviest": heavy, "load_average": [load_before[0], load_after[0]]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
