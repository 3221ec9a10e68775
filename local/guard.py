"""Kills a stack's processes when its supervisor dies without stopping them (kill -9, OOM killer).

``python -m local.guard --token T [--run-file PATH]`` reads commands on stdin from the supervisor:
``watch GROUP IDENTITY`` (a child's process group), ``forget GROUP``, ``done`` (a clean stop:
exit and touch nothing). End of input without ``done`` means the supervisor is gone, on any
platform: every watched group that is still the one recorded gets SIGKILL, and so does (Linux)
every process carrying the run's token, grandchildren that left their group included.

The children's parent-death signal already ends the direct children on Linux; this ends what
they started (server workers holding a stream, Tansu) and is all there is elsewhere.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from pathlib import Path

from local import processes
from local.runfile import TOKEN_ENV, remove_run_file


def reap(groups: dict[int, str | None], token: str, proc: Path = processes.PROC) -> list[int]:
    """SIGKILL the watched groups and the token's processes; the groups and pids signalled."""
    signalled: list[int] = []
    for group, recorded in groups.items():
        current = processes.identity(group, proc)
        if current is not None and recorded is not None and current != recorded:
            continue  # the pid now names another process, and so another group
        if processes.kill_group(group):
            signalled.append(group)
    if processes.IS_LINUX:
        for info in processes.processes_with_environ(TOKEN_ENV, token, proc):
            if info.pid != os.getpid():
                processes.kill_process(info.pid)
                signalled.append(info.pid)
    return signalled


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m local.guard")
    parser.add_argument("--token", required=True)
    parser.add_argument("--run-file", type=Path)
    args = parser.parse_args(argv)
    # The terminal's signals are for the supervisor; this one must outlive it.
    for number in (signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_IGN)
    groups: dict[int, str | None] = {}
    for raw in sys.stdin.buffer:
        words = raw.decode(errors="replace").split()
        if not words:
            continue
        if words[0] == "done":
            return 0
        try:
            group = int(words[1])
        except (IndexError, ValueError):
            continue
        if words[0] == "watch":
            recorded = " ".join(words[2:])
            groups[group] = recorded if recorded and recorded != "-" else None
        elif words[0] == "forget":
            groups.pop(group, None)
    reap(groups, args.token)
    time.sleep(0.2)
    reap(groups, args.token)  # a child that forked while the first round ran
    if args.run_file is not None:
        remove_run_file(args.run_file, args.token)
    return 0


if __name__ == "__main__":
    sys.exit(main())
