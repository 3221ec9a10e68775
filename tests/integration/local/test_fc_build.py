"""The FC code package: deterministic, within limits, and importable in a fresh interpreter.

The full package needs the cp310 wheelhouse, which only ``barrage build --workload-class fc
--download-only`` fetches (network); tests never fetch, so without it that test is skipped
with the command to run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from click.testing import CliRunner

from local.build import FIXED_TIME, build, build_fc_package, default_wheelhouse, target_python

REPO = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.integration


def test_project_only_package_is_deterministic(tmp_path: Path) -> None:
    first = build_fc_package(tmp_path / "a.zip", tmp_path / "none", with_dependencies=False, fetch=False)
    second = build_fc_package(tmp_path / "b.zip", tmp_path / "none", with_dependencies=False, fetch=False)
    assert first.sha256 == second.sha256
    assert first.bytecode == (target_python("3.10") is not None)
    with zipfile.ZipFile(first.path) as archive:
        names = archive.namelist()
        assert names == sorted(names)
        assert "functions/fc.py" in names and "handlers/model.py" in names
        assert not [n for n in names if n.startswith(("local/", "tests/"))]
        compiled = [n for n in names if n.endswith(".pyc") or "__pycache__" in n]
        # FC's /code is read-only: a module without bytecode here is compiled on every cold start.
        sources = [n for n in names if n.endswith(".py")]
        expected = {f"{n.rsplit('/', 1)[0]}/__pycache__/{n.rsplit('/', 1)[1][:-3]}.cpython-310.pyc" for n in sources}
        assert set(compiled) == (expected if first.bytecode else set())
        for name in compiled:  # hash-checked (PEP 552 flags 0b11): reproducible, yet stale ones are recompiled
            assert archive.read(name)[4:8] == b"\x03\x00\x00\x00", name
        assert {info.date_time for info in archive.infolist()} == {FIXED_TIME}
        # The custom runtime's entry: FC runs ./bootstrap from the package root, so it must be executable.
        bootstrap = archive.getinfo("bootstrap")
        assert (bootstrap.external_attr >> 16) & 0o777 == 0o755
        assert archive.read("bootstrap").startswith(b"#!/bin/bash\n")
        assert b"exec python3 -m functions.entrypoint" in archive.read("bootstrap")
        assert {(i.external_attr >> 16) & 0o777 for i in archive.infolist() if i.filename != "bootstrap"} == {0o644}


def test_over_the_limit_fails_with_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(build, ["--workload-class", "fc", "--no-deps", "--output", str(tmp_path / "p.zip"),
                                        "--max-zipped-mb", "0.001"])
    assert result.exit_code == 1
    assert result.output.strip().count("\n") == 0 and "above the 0.001 MB" in result.output


def test_unknown_workload_class_is_rejected() -> None:
    result = CliRunner().invoke(build, ["--workload-class", "lambda"])
    assert result.exit_code == 2 and "lambda" in result.output


def test_full_package_imports_in_a_fresh_python310_venv(tmp_path: Path) -> None:
    python310 = target_python("3.10")
    if python310 is None:
        pytest.skip("no python3.10 on this machine (FC's runtime version); the package's wheels are cp310")
    wheelhouse = default_wheelhouse("3.10")
    if not wheelhouse.is_dir() or not any(wheelhouse.glob("*.whl")):
        pytest.skip(f"no wheelhouse at {wheelhouse}: run `barrage build --workload-class fc --download-only` once")
    result = build_fc_package(tmp_path / "fc.zip", wheelhouse, "3.10", fetch=False)
    assert result.zipped_bytes < 500 * 1024 * 1024
    code = tmp_path / "code"
    with zipfile.ZipFile(result.path) as archive:
        archive.extractall(code)
    venv = tmp_path / "venv"
    subprocess.run([python310, "-m", "venv", "--without-pip", str(venv)], check=True)
    probe = (
        "import json, sys, time\n"
        "t = time.perf_counter(); import functions.barrage_app as entry; ms = (time.perf_counter() - t) * 1000\n"
        "import functions.fc as fc\n"
        "import confluent_kafka, tablestore, flask  # compiled and pure dependencies load\n"
        "import uvloop, httptools  # what the custom runtime's uvicorn serves on\n"
        "ctx = fc.context_from_headers({'x-fc-request-id': 'r'})\n"
        "out = entry.processor(open(sys.argv[1], 'rb').read(), ctx)\n"
        "print(json.dumps({'version': sys.version_info[:2], 'import_ms': ms, 'stored': out['ok'],"
        " 'kafka': confluent_kafka.__version__, 'fc_file': entry.__file__}))\n"
    )
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(code), "BARRAGE_DB": str(tmp_path / "b.db"),
           "BARRAGE_BUS": "memory", "PYTHONDONTWRITEBYTECODE": "1"}
    done = subprocess.run([str(venv / "bin" / "python"), "-c", probe, str(REPO / "tests/events/fc_kafka_batch.json")],
                          cwd=code, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["version"] == [3, 10] and report["stored"] == 2
    assert report["fc_file"].startswith(str(code))  # the package's copy, not the source tree
    assert report["kafka"] == "2.16.1"
    print(f"functions.barrage_app import in the fresh 3.10 venv: {report['import_ms']:.1f} ms")
    bench = subprocess.run([sys.executable, str(REPO / "bench/fc_import.py"), "--python", str(venv / "bin/python"),
                            "--path", str(code), "--runs", "3"], capture_output=True, text=True)
    assert bench.returncode == 0, bench.stderr
    figures = json.loads(bench.stdout.strip().splitlines()[-1])
    assert figures["functions.barrage_app"] is not None
    print(bench.stdout)
