"""local.processes against a proc tree built here: stat parsing, identities, port holders."""

from __future__ import annotations

import os
from pathlib import Path

from local import processes
from local.processes import PortHolder, describe_holders

BOOT = "8c9f939e-9d71-473d-ae4b-fd0885bff395"
TCP_HEADER = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n")


def stat_line(pid: int, comm: str, state: str = "S", ppid: int = 1, group: int | None = None,
              session: int | None = None, started: int = 1000) -> str:
    group = pid if group is None else group
    session = group if session is None else session
    # Fields 3.. as the kernel writes them; starttime is field 22.
    rest = [state, ppid, group, session, 0, -1, 4194304] + [0] * 12 + [started] + [0] * 30
    return f"{pid} ({comm}) " + " ".join(str(v) for v in rest) + "\n"


def add_process(proc: Path, pid: int, comm: str = "python3", argv: tuple[str, ...] = ("python3",),
                environ: dict[str, str] | None = None, sockets: tuple[int, ...] = (), **stat: int | str) -> None:
    folder = proc / str(pid)
    (folder / "fd").mkdir(parents=True)
    (folder / "stat").write_text(stat_line(pid, comm, **stat))  # type: ignore[arg-type]
    (folder / "cmdline").write_bytes(b"\0".join(a.encode() for a in argv) + b"\0")
    (folder / "environ").write_bytes(b"\0".join(f"{k}={v}".encode() for k, v in (environ or {}).items()) + b"\0")
    for number, inode in enumerate(sockets, start=3):
        os.symlink(f"socket:[{inode}]", folder / "fd" / str(number))


def make_proc(tmp_path: Path) -> Path:
    proc = tmp_path / "proc"
    (proc / "sys" / "kernel" / "random").mkdir(parents=True)
    (proc / "sys" / "kernel" / "random" / "boot_id").write_text(BOOT + "\n")
    (proc / "net").mkdir()
    (proc / "net" / "tcp").write_text(TCP_HEADER)
    (proc / "net" / "tcp6").write_text(TCP_HEADER)
    return proc


def tcp_row(port: int, state: str, inode: int, address: str = "0100007F") -> str:
    return (f"   0: {address}:{port:04X} 00000000:0000 {state} 00000000:00000000 00:00000000 00000000"
            f"     0        0 {inode} 1 0000000000000000 100 0 0 10 0\n")


def test_stat_is_parsed_even_when_the_command_name_holds_parentheses_and_spaces(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 42, comm="we (ird) name", argv=("/usr/bin/thing", "--flag"), ppid=7, group=40, session=30,
                started=123456)
    info = processes.read_process(42, proc)
    assert info is not None
    assert (info.parent, info.group, info.session, info.state) == (7, 40, 30, "S")
    assert info.identity == f"{BOOT}:123456"
    assert info.command == "/usr/bin/thing --flag"


def test_identity_tells_a_reused_pid_from_the_process_recorded(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 42, started=5000)
    assert processes.identity(42, proc) == f"{BOOT}:5000"
    assert processes.identity(43, proc) is None  # gone
    add_process(proc, 44, state="Z")
    assert processes.identity(44, proc) is None  # a zombie runs nothing


def test_processes_with_environ_finds_a_run_token_and_skips_zombies(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 10, environ={"BARRAGE_STACK_RUN": "abc", "HOME": "/root"})
    add_process(proc, 11, environ={"BARRAGE_STACK_RUN": "abcd"})  # another run's token, not a prefix match
    add_process(proc, 12, environ={"BARRAGE_STACK_RUN": "abc"}, state="Z")
    add_process(proc, 13, environ={"X": "BARRAGE_STACK_RUN=abc"})
    assert [p.pid for p in processes.processes_with_environ("BARRAGE_STACK_RUN", "abc", proc)] == [10]


def test_live_groups_count_running_members_only(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    add_process(proc, 100)  # leads group 100
    add_process(proc, 201, group=200)  # the leader of group 200 is gone; a member remains
    add_process(proc, 301, group=300, state="Z")
    assert processes.live_groups([100, 200, 300, 400], proc) == {100, 200}
    assert processes.live_groups([], proc) == set()


def test_port_holders_prefer_the_listener_and_name_every_process_sharing_it(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    (proc / "net" / "tcp").write_text(TCP_HEADER + tcp_row(8080, "0A", 555) + tcp_row(8080, "01", 556)
                                      + tcp_row(8080, "06", 0) + tcp_row(9092, "0A", 777))
    add_process(proc, 20, argv=("/venv/bin/python", "-m", "functions_framework", "--port", "8080"), sockets=(555,))
    add_process(proc, 21, argv=("/venv/bin/python", "-m", "functions_framework", "--port", "8080"), sockets=(555,),
                ppid=20, group=20)
    add_process(proc, 22, argv=("curl",), sockets=(556,))  # a connection on that port, not the listener
    add_process(proc, 30, argv=("tansu",), sockets=(777,))
    holders = processes.port_holders(8080, proc)
    assert [h.pid for h in holders] == [20, 21]
    assert describe_holders(holders) == "pids 20, 21 (python -m functions_framework --port 8080)"
    assert describe_holders(processes.port_holders(9092, proc)) == "pid 30 (tansu)"
    assert processes.port_holders(1234, proc) == []


def test_port_holders_read_ipv6_and_a_socket_nobody_visible_owns(tmp_path: Path) -> None:
    proc = make_proc(tmp_path)
    (proc / "net" / "tcp6").write_text(TCP_HEADER + tcp_row(8081, "0A", 900, "00000000000000000000000000000000"))
    holders = processes.port_holders(8081, proc)
    assert holders == [PortHolder(8081, None)]
    assert describe_holders(holders) == "a process this user cannot see"
    assert describe_holders([]) == "a process that could not be identified"


def test_long_commands_are_shortened_for_one_line() -> None:
    holder = PortHolder(1, 5, "/a/very/long/path/python " + "x" * 200)
    assert holder.short_command.startswith("python xxx") and len(holder.short_command) == 100
