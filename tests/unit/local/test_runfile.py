"""The run file of ``barrage up``: format, and which recorded processes still count as the stack's."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from local.runfile import (
    TOKEN_ENV,
    RunFileError,
    RunProcess,
    RunRecord,
    live_processes,
    read_run_file,
    remove_run_file,
    stop_previous_stack,
    write_run_file,
)
from tests.unit.local.test_processes import BOOT, add_process, make_proc

TOKEN = "0123456789abcdef0123456789abcdef"


def record(**overrides: object) -> RunRecord:
    values: dict[str, object] = {
        "token": TOKEN,
        "supervisor": RunProcess("supervisor", 100, f"{BOOT}:1000"),
        "children": (RunProcess("broker", 110, f"{BOOT}:1100", (9092,)),
                     RunProcess("homepage", 120, f"{BOOT}:1200", (8080,))),
        "guard": RunProcess("guard", 105, f"{BOOT}:1050"),
    }
    values.update(overrides)
    return RunRecord(**values)  # type: ignore[arg-type]


def test_a_record_survives_the_round_trip_through_its_file(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_run_file(path, record())
    assert read_run_file(path) == record()
    assert read_run_file(path).ports == {"broker": (9092,), "homepage": (8080,)}  # type: ignore[union-attr]
    data = json.loads(path.read_text())
    assert data["children"][0] == {"name": "broker", "pid": 110, "group": 110, "identity": f"{BOOT}:1100",
                                   "ports": [9092]}
    assert list(tmp_path.iterdir()) == [path]  # the temporary file was renamed into place


def test_no_file_is_no_record_and_a_broken_one_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    assert read_run_file(path) is None
    for text in ("{", "[]", '{"format": 99}', json.dumps({"format": 1, "token": TOKEN, "supervisor": {"pid": 1}}),
                 json.dumps({"format": 1, "token": "short", "supervisor": {"name": "s", "pid": 5}})):
        path.write_text(text)
        with pytest.raises(RunFileError):
            read_run_file(path)


def test_removal_leaves_a_newer_stacks_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    write_run_file(path, record(token="f" * 32))
    remove_run_file(path, TOKEN)
    assert path.exists()
    remove_run_file(path, "f" * 32)
    assert not path.exists()
    remove_run_file(path, TOKEN)  # nothing to remove is fine


def test_live_processes_are_the_recorded_ones_still_running_and_every_token_carrier(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 100, started=1000)  # the supervisor, still running
    add_process(proc, 110, started=9999)  # pid 110 reused by an unrelated process: not ours
    add_process(proc, 111, group=110, environ={TOKEN_ENV: TOKEN})  # Tansu, left in the broker's group
    add_process(proc, 120, started=1200, environ={TOKEN_ENV: TOKEN})
    add_process(proc, 121, group=120, environ={TOKEN_ENV: TOKEN})  # a gunicorn worker
    add_process(proc, 130, environ={TOKEN_ENV: "another-run-token-0000000000000"})
    assert [p.pid for p in live_processes(record(), proc)] == [100, 111, 120, 121]


def test_a_stack_whose_processes_are_all_gone_or_reused_is_forgotten_without_a_kill(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 100, started=77)  # every recorded pid now names another process
    add_process(proc, 110, started=78)
    add_process(proc, 120, started=79)
    path = tmp_path / "stack.json"
    write_run_file(path, record())
    said: list[str] = []
    assert stop_previous_stack(path, said.append, proc=proc) == 0
    assert said == [] and not path.exists()


def test_a_broken_run_file_is_reported_and_dropped(tmp_path: Path) -> None:
    path = tmp_path / "stack.json"
    path.write_text("not json")
    said: list[str] = []
    assert stop_previous_stack(path, said.append) == 0
    assert len(said) == 1 and said[0].startswith(f"ignoring {path}: unreadable run file")
    assert not path.exists()
