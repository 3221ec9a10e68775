"""Cold-start import cost: ``functions.barrage_app`` (the FC entry module) vs ``functions_framework``.

Each figure is the median of fresh interpreter runs (imports are cached within one process).

    python bench/fc_import.py [--python PATH] [--path DIR] [--runs N]

``--path`` puts a directory first on sys.path (an unzipped code package, as FC does).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

PROBE = (
    "import sys, time; t = time.perf_counter(); import {module}; "
    "print((time.perf_counter() - t) * 1000)"
)


def measure(python: str, module: str, path: str | None, runs: int) -> float | None:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path
    samples = []
    for _ in range(runs):
        done = subprocess.run([python, "-c", PROBE.format(module=module)], capture_output=True, text=True, env=env,
                              cwd=path or None)
        if done.returncode != 0:
            return None
        samples.append(float(done.stdout.strip()))
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--python", default=sys.executable)
    parser.add_argument("--path", default=None)
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    figures = {module: measure(args.python, module, args.path, args.runs)
               for module in ("functions.barrage_app", "functions_framework")}
    for module, ms in figures.items():
        print(f"{module:>22}: {'not importable' if ms is None else f'{ms:.1f} ms'}")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
