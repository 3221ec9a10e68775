"""Cold start: import time of each FC entry module against functions-framework alone.

Modules: ``functions.barrage_app`` (the code package's handlers), ``functions.main``
(functions-framework targets), ``functions.bindings.custom_container`` (custom container server)
and ``functions_framework``.
Each figure is the median of ``--runs`` fresh interpreters (bench/fc_import.py's probe: the
time of the ``import`` statement alone, interpreter start-up excluded). For modules over the
target, ``-X importtime`` names the costliest imports (self time, one fresh run).

    .venv/bin/python bench/cold_start.py [--runs 9] [--target-ms 150]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _support import ROOT, emit_json
from fc_import import measure

MODULES = ("functions.barrage_app", "functions.main", "functions.bindings.custom_container", "functions_framework")


def heaviest_imports(python: str, module: str, top: int) -> list[tuple[str, float, float]]:
    """(module, self ms, cumulative ms) of the costliest imports, from ``-X importtime``."""
    done = subprocess.run([python, "-X", "importtime", "-c", f"import {module}"], capture_output=True, text=True,
                          cwd=ROOT)
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = (part.strip() for part in line[len("import time:"):].split("|"))
        rows.append((name.strip(), int(own) / 1000, int(cumulative) / 1000))
    return sorted(rows, key=lambda row: -row[1])[:top]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--runs", type=int, default=9)
    parser.add_argument("--target-ms", type=float, default=150.0)
    parser.add_argument("--top", type=int, default=6)
    args = parser.parse_args(argv)
    figures = {module: measure(args.python, module, str(ROOT), args.runs) for module in MODULES}
    baseline = figures["functions_framework"]
    heavy = {}
    for module, ms in figures.items():
        if ms is None:
            print(f"{module:>24}: not importable")
            continue
        relative = f", {ms / baseline:.2f}x functions_framework" if baseline and module != "functions_framework" else ""
        verdict = "" if module == "functions_framework" else (" (met)" if ms <= args.target_ms else " (NOT met)")
        print(f"{module:>24}: {ms:7.1f} ms{relative}{verdict}")
        if ms > args.target_ms and module != "functions_framework":
            heavy[module] = heaviest_imports(args.python, module, args.top)
            for name, own, cumulative in heavy[module]:
                print(f"{'':>28}{own:6.1f} ms self, {cumulative:6.1f} ms cumulative: {name}")
    print(f"median of {args.runs} fresh interpreters each; target <= {args.target_ms:.0f} ms per entry module")
    emit_json({"ms": figures, "runs": args.runs, "target_ms": args.target_ms, "heaviest": heavy})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
