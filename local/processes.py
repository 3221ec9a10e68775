"""What the operating system says about processes and ports, for ``barrage up``.

Linux answers from ``/proc`` (every reader takes the proc root, so tests can hand it a tree of
their own); elsewhere ``ps`` and ``lsof`` give what they can, and what nobody can tell is None.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

PROC = Path("/proc")
IS_LINUX = sys.platform.startswith("linux")
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_TCP_LISTEN = "0A"
_TCP_TIME_WAIT = "06"


@dataclass(frozen=True)
class ProcessInfo:
    pid: int
    parent: int
    group: int
    session: int
    state: str  # one letter, as in ps: R, S, D, Z, ...
    # Boot id and start time: no later process with the same pid has the same value.
    identity: str
    command: str

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def _boot_id(proc: Path) -> str:
    try:
        return (proc / "sys" / "kernel" / "random" / "boot_id").read_text().strip()
    except OSError:
        return ""


def _command(proc: Path, pid: int, fallback: str) -> str:
    try:
        raw = (proc / str(pid) / "cmdline").read_bytes()
    except OSError:
        raw = b""
    words = [w.decode(errors="replace") for w in raw.split(b"\0") if w]
    return " ".join(words) or f"[{fallback}]"


def read_process(pid: int, proc: Path = PROC) -> ProcessInfo | None:
    """One process from ``proc``; None when it is gone (or this is not Linux)."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except (OSError, ValueError):
        return None
    # "pid (comm) state ppid pgrp session ..."; comm may hold spaces and parentheses.
    name = stat[stat.find("(") + 1:stat.rfind(")")]
    fields = stat[stat.rfind(")") + 2:].split()
    try:
        parent, group, session, started = int(fields[1]), int(fields[2]), int(fields[3]), fields[19]
    except (IndexError, ValueError):
        return None
    return ProcessInfo(pid, parent, group, session, fields[0], f"{_boot_id(proc)}:{started}",
                       _command(proc, pid, name))


def all_pids(proc: Path = PROC) -> list[int]:
    try:
        return sorted(int(entry.name) for entry in proc.iterdir() if entry.name.isdigit())
    except OSError:
        return []


def all_processes(proc: Path = PROC) -> Iterator[ProcessInfo]:
    for pid in all_pids(proc):
        info = read_process(pid, proc)
        if info is not None:
            yield info


def identity(pid: int, proc: Path = PROC) -> str | None:
    """A value that names this process and no later one reusing its pid; None if it is gone."""
    if IS_LINUX or proc != PROC:
        info = read_process(pid, proc)
        return None if info is None or info.zombie else info.identity
    return _ps_field(pid, "lstart=")


def command_line(pid: int, proc: Path = PROC) -> str | None:
    if IS_LINUX or proc != PROC:
        info = read_process(pid, proc)
        return None if info is None else info.command
    return _ps_field(pid, "command=")


def _ps_field(pid: int, field: str) -> str | None:
    ps = shutil.which("ps")
    if ps is None:
        return None
    try:
        done = subprocess.run([ps, "-o", field, "-p", str(pid)], capture_output=True, text=True, timeout=5,
                              check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    value = " ".join(done.stdout.split())  # one line, single spaces: it travels in line protocols
    return value if done.returncode == 0 and value else None


def has_environ(pid: int, name: str, value: str, proc: Path = PROC) -> bool:
    """True if the process was started with ``name=value`` in its environment (Linux only)."""
    try:
        raw = (proc / str(pid) / "environ").read_bytes()
    except OSError:
        return False
    return f"{name}={value}".encode() in raw.split(b"\0")


def processes_with_environ(name: str, value: str, proc: Path = PROC) -> list[ProcessInfo]:
    """Running (not zombie) processes started with ``name=value``: a process tree marks itself so."""
    found = []
    for pid in all_pids(proc):
        if has_environ(pid, name, value, proc):
            info = read_process(pid, proc)
            if info is not None and not info.zombie:
                found.append(info)
    return found


def live_groups(groups: Collection[int], proc: Path = PROC) -> set[int]:
    """Which of ``groups`` (process group ids) still hold a running process; zombies do not count."""
    if not groups:
        return set()
    if IS_LINUX or proc != PROC:
        wanted = set(groups)
        return {info.group for info in all_processes(proc) if info.group in wanted and not info.zombie}
    alive = set()
    for group in groups:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            continue
        except PermissionError:
            pass
        alive.add(group)
    return alive


# -- who holds a port ---------------------------------------------------------------------


@dataclass(frozen=True)
class PortHolder:
    port: int
    pid: int | None  # None: a socket whose process this user may not see
    command: str = ""

    @property
    def short_command(self) -> str:
        """The command with the program's directory dropped, at most 100 characters."""
        program, _, rest = self.command.partition(" ")
        shown = " ".join(w for w in (os.path.basename(program), rest) if w)
        return shown if len(shown) <= 100 else shown[:97] + "..."


def describe_holders(holders: Sequence[PortHolder]) -> str:
    """"pids 12, 13 (python -m functions_framework ...)": processes sharing one command together."""
    if not holders:
        return "a process that could not be identified"
    by_command: dict[str, list[int]] = {}
    for holder in holders:
        if holder.pid is None:
            by_command.setdefault("", [])
        else:
            by_command.setdefault(holder.short_command, []).append(holder.pid)
    parts = []
    for command, pids in by_command.items():
        if not pids:
            parts.append("a process this user cannot see")
            continue
        who = f"pid {pids[0]}" if len(pids) == 1 else f"pids {', '.join(map(str, pids))}"
        parts.append(f"{who} ({command})" if command else who)
    return ", ".join(parts)


def _socket_inodes(port: int, proc: Path) -> list[int]:
    """Inodes of TCP sockets bound to ``port``, listening ones first (IPv4 and IPv6)."""
    listening: list[int] = []
    other: list[int] = []
    for table in ("tcp", "tcp6"):
        try:
            lines = (proc / "net" / table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            _, _, port_hex = fields[1].rpartition(":")
            try:
                local_port, inode = int(port_hex, 16), int(fields[9])
            except ValueError:
                continue
            if local_port != port or inode == 0 or fields[3] == _TCP_TIME_WAIT:
                continue
            (listening if fields[3] == _TCP_LISTEN else other).append(inode)
    return list(dict.fromkeys(listening or other))


def _socket_owners(inodes: Collection[int], proc: Path) -> dict[int, list[int]]:
    """inode -> pids that hold a descriptor of that socket."""
    targets = {f"socket:[{inode}]": inode for inode in inodes}
    owners: dict[int, list[int]] = {}
    for pid in all_pids(proc):
        fd_dir = proc / str(pid) / "fd"
        try:
            descriptors = list(fd_dir.iterdir())
        except OSError:  # gone, or another user's
            continue
        for descriptor in descriptors:
            try:
                link = os.readlink(descriptor)
            except OSError:
                continue
            inode = targets.get(link)
            if inode is not None and pid not in owners.setdefault(inode, []):
                owners[inode].append(pid)
    return owners


def port_holders(port: int, proc: Path = PROC) -> list[PortHolder]:
    """The processes holding TCP ``port`` (listeners first); empty when nothing is known."""
    if not (IS_LINUX or proc != PROC):
        return _lsof_holders(port)
    inodes = _socket_inodes(port, proc)
    owners = _socket_owners(inodes, proc)
    holders: list[PortHolder] = []
    seen: set[int] = set()
    for inode in inodes:
        pids = owners.get(inode)
        if not pids:
            if not holders:
                holders.append(PortHolder(port, None))
            continue
        for pid in pids:
            if pid not in seen:
                seen.add(pid)
                holders.append(PortHolder(port, pid, command_line(pid, proc) or ""))
    known = [h for h in holders if h.pid is not None]
    return known or holders


def _lsof_holders(port: int) -> list[PortHolder]:
    lsof = shutil.which("lsof")
    if lsof is None:
        return []
    try:
        done = subprocess.run([lsof, "-nP", f"-iTCP:{port}", "-sTCP:LISTEN", "-Fp"], capture_output=True,
                              text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return []
    pids = [int(line[1:]) for line in done.stdout.splitlines() if line.startswith("p") and line[1:].isdigit()]
    return [PortHolder(port, pid, command_line(pid) or "") for pid in dict.fromkeys(pids)]


# -- dying with the parent ------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _prctl() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def parent_death_signal(signum: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` giving the child ``signum`` when its parent dies, even by SIGKILL (Linux).

    The kernel sends it when the *thread* that forked the child ends, so spawn from a thread
    that lives as long as the parent (the main thread). The setting survives exec, not fork:
    a child's own children need their own. None where the platform has no such thing.
    """
    if not IS_LINUX:
        return None
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:  # runs in the child between fork and exec
        if prctl(PR_SET_PDEATHSIG, signum, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")
        if os.getppid() != parent:  # the parent died before the prctl: nobody will signal us
            os.kill(os.getpid(), signum)

    return set_parent_death_signal


def kill_group(group: int, signum: int = signal.SIGKILL) -> bool:
    """Signal a whole process group; False if it no longer exists."""
    try:
        os.killpg(group, signum)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def kill_process(pid: int, signum: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)
