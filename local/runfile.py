"""The run file of ``barrage up``: which processes and ports a running stack holds.

The supervisor writes it into the data directory whenever a child starts and removes it after a
clean stop. A later ``barrage up`` on the same directory reads it to find what an earlier stack
left running (its supervisor was killed outright, say) and stops exactly those processes: a
recorded pid counts only while its start time matches, and every process of the stack, down to
grandchildren, carries the run's token in its environment (``TOKEN_ENV``).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from local import processes
from local.processes import ProcessInfo

RUN_FILE_NAME = "stack.json"
TOKEN_ENV = "BARRAGE_STACK_RUN"
FORMAT = 1


class RunFileError(ValueError):
    """A run file that cannot be read as one."""


@dataclass(frozen=True)
class RunProcess:
    name: str
    pid: int
    identity: str | None  # processes.identity() when it started
    ports: tuple[int, ...] = ()

    def running(self, proc: Path = processes.PROC) -> bool:
        """Still this very process (not a later one that got the same pid)."""
        return self.identity is not None and processes.identity(self.pid, proc) == self.identity


@dataclass(frozen=True)
class RunRecord:
    token: str
    supervisor: RunProcess
    # Each child leads its own process group (and session): the group id is its pid.
    children: tuple[RunProcess, ...] = ()
    guard: RunProcess | None = None

    @property
    def ports(self) -> dict[str, tuple[int, ...]]:
        return {child.name: child.ports for child in self.children if child.ports}

    def to_json(self) -> str:
        def one(p: RunProcess) -> dict[str, Any]:
            return {"name": p.name, "pid": p.pid, "group": p.pid, "identity": p.identity, "ports": list(p.ports)}

        return json.dumps({
            "format": FORMAT, "token": self.token, "supervisor": one(self.supervisor),
            "guard": one(self.guard) if self.guard else None, "children": [one(c) for c in self.children],
        }, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or data.get("format") != FORMAT:
                raise RunFileError(f"not a run file of format {FORMAT}")

            def one(item: Any) -> RunProcess:
                pid = item["pid"]
                if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 1:
                    raise RunFileError(f"bad pid {pid!r}")
                ident = item.get("identity")
                return RunProcess(str(item["name"]), pid, ident if isinstance(ident, str) else None,
                                  tuple(int(p) for p in item.get("ports") or ()))

            token = data["token"]
            if not isinstance(token, str) or len(token) < 16:
                raise RunFileError("bad token")
            guard = data.get("guard")
            return cls(token, one(data["supervisor"]), tuple(one(c) for c in data.get("children") or ()),
                       one(guard) if guard else None)
        except RunFileError:
            raise
        except (ValueError, KeyError, TypeError) as exc:
            raise RunFileError(f"unreadable run file: {exc}") from None


def write_run_file(path: Path, record: RunRecord) -> None:
    """Replace the run file atomically: a reader sees the old one or the new one."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(record.to_json(), encoding="utf-8")
    os.replace(temporary, path)


def read_run_file(path: Path) -> RunRecord | None:
    """The record at ``path``; None if there is none. RunFileError if it is not one."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise RunFileError(f"cannot read {path}: {exc}") from None
    return RunRecord.from_json(text)


def remove_run_file(path: Path, token: str) -> None:
    """Remove the run file if it still describes the run ``token`` (a newer stack's stays)."""
    try:
        record = read_run_file(path)
    except RunFileError:
        return
    if record is not None and record.token == token:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def live_processes(record: RunRecord, proc: Path = processes.PROC) -> list[ProcessInfo | RunProcess]:
    """What still runs of that stack: recorded processes whose start time still matches, plus
    (Linux) every process carrying the run's token, which finds grandchildren too."""
    found: dict[int, ProcessInfo | RunProcess] = {}
    if processes.IS_LINUX or proc != processes.PROC:
        for info in processes.processes_with_environ(TOKEN_ENV, record.token, proc):
            if info.pid != os.getpid():  # a stack started from inside the old one inherited its token
                found[info.pid] = info
    for recorded in (record.supervisor, *([record.guard] if record.guard else []), *record.children):
        if recorded.pid not in found and recorded.running(proc):
            found[recorded.pid] = recorded
    return sorted(found.values(), key=lambda p: p.pid)


def _describe(found: Sequence[ProcessInfo | RunProcess]) -> str:
    return ", ".join(str(p.pid) for p in found)


def stop_previous_stack(
    path: Path,
    say: Callable[[str], None],
    grace_s: float = 5.0,
    proc: Path = processes.PROC,
) -> int:
    """Stop what the stack recorded at ``path`` left running; the number of processes stopped.

    A supervisor that still runs is asked to stop (SIGTERM: its own bounded stop); whatever is
    left after ``grace_s`` is killed. Raises ``RunFileError`` when something survives that.
    """
    try:
        record = read_run_file(path)
    except RunFileError as exc:
        say(f"ignoring {path}: {exc}")
        path.unlink(missing_ok=True)
        return 0
    if record is None:
        return 0
    found = live_processes(record, proc)
    if not found:
        path.unlink(missing_ok=True)
        return 0
    supervisor_running = record.supervisor.running(proc)
    who = f"supervisor pid {record.supervisor.pid}, " if supervisor_running else "its supervisor is gone, "
    say(f"stopping the previous stack recorded in {path} ({who}{len(found)} processes)")
    deadline = time.monotonic() + grace_s
    if supervisor_running:
        processes.kill_process(record.supervisor.pid, signal.SIGTERM)
        while time.monotonic() < deadline and record.supervisor.running(proc):
            time.sleep(0.05)
    remaining = live_processes(record, proc)
    for recorded in record.children:
        if recorded.running(proc):  # its group: grandchildren the environment scan cannot see elsewhere
            processes.kill_group(recorded.pid)
    for item in remaining:
        processes.kill_process(item.pid)
    settle = time.monotonic() + 2.0
    while remaining and time.monotonic() < settle:
        time.sleep(0.05)
        remaining = live_processes(record, proc)
    if remaining:
        raise RunFileError(f"the previous stack's pids {_describe(remaining)} survived SIGKILL; see {path}")
    path.unlink(missing_ok=True)
    return len(found)
