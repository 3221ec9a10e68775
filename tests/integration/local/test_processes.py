"""Process facts, parent death, the guard and a previous stack's clean-up, against real processes."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from local import processes
from local.runfile import TOKEN_ENV, RunProcess, RunRecord, read_run_file, stop_previous_stack, write_run_file
from tests.waiting import wait_for

ROOT = Path(__file__).resolve().parents[3]
linux_only = pytest.mark.skipif(not processes.IS_LINUX, reason="Linux's /proc and PR_SET_PDEATHSIG")
SLEEPER = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"


@contextlib.contextmanager
def spawned(argv: list[str], **kwargs: object) -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            if kwargs.get("start_new_session"):
                os.killpg(process.pid, signal.SIGKILL)  # and whatever it started in its group
            else:
                process.kill()
        process.wait(5)


def running(pid: int) -> bool:
    return processes.identity(pid) is not None


@linux_only
def test_a_listening_socket_is_traced_to_its_process() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        [holder] = processes.port_holders(port)
    assert holder.pid == os.getpid()
    assert holder.command == processes.command_line(os.getpid())


@linux_only
def test_identity_is_stable_for_a_process_and_gone_with_it() -> None:
    with spawned([sys.executable, "-c", "import time; time.sleep(30)"]) as process:
        first = processes.identity(process.pid)
        assert first is not None and first == processes.identity(process.pid)
        assert first != processes.identity(os.getpid())
        process.kill()
        process.wait(5)
    assert processes.identity(process.pid) is None


# The middle process starts a leaf that ignores SIGTERM, with or without the parent-death signal.
MIDDLE = r"""
import subprocess, sys
from local.processes import parent_death_signal
leaf = subprocess.Popen([sys.executable, "-c", sys.argv[1]],
                        preexec_fn=parent_death_signal() if sys.argv[2] == "yes" else None)
print(leaf.pid, flush=True)
leaf.wait()
"""


@linux_only
@pytest.mark.parametrize("with_signal", [True, False], ids=["pdeathsig", "without"])
def test_a_child_dies_with_its_parent_only_with_the_parent_death_signal(with_signal: bool) -> None:
    argv = [sys.executable, "-c", MIDDLE, SLEEPER, "yes" if with_signal else "no"]
    with spawned(argv, stdout=subprocess.PIPE, cwd=ROOT, start_new_session=True) as middle:
        assert middle.stdout is not None
        leaf = int(middle.stdout.readline())
        assert running(leaf)
        middle.kill()
        middle.wait(5)
        if with_signal:
            wait_for(lambda: not running(leaf), 5, "the leaf to die with its parent")
        else:  # the control: without it the leaf outlives its parent, SIGTERM or not
            with contextlib.suppress(AssertionError):
                wait_for(lambda: not running(leaf), 1, "the leaf")
            assert running(leaf)


def guard(token: str, run_file: Path | None = None) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "local.guard", "--token", token]
    if run_file is not None:
        argv += ["--run-file", str(run_file)]
    return subprocess.Popen(argv, stdin=subprocess.PIPE, cwd=ROOT, start_new_session=True)


def tell(process: subprocess.Popen[bytes], *lines: str) -> None:
    assert process.stdin is not None
    process.stdin.write("".join(f"{line}\n" for line in lines).encode())
    process.stdin.flush()


def test_the_guard_kills_the_watched_groups_when_its_supervisor_goes(tmp_path: Path) -> None:
    token = os.urandom(16).hex()
    run_file = tmp_path / "stack.json"
    write_run_file(run_file, RunRecord(token, RunProcess("supervisor", os.getpid(), processes.identity(os.getpid()))))
    with spawned([sys.executable, "-c", SLEEPER], start_new_session=True) as target:
        watcher = guard(token, run_file)
        tell(watcher, f"watch {target.pid} {processes.identity(target.pid) or '-'}")
        assert watcher.stdin is not None
        watcher.stdin.close()  # what the supervisor's death does to the pipe
        assert watcher.wait(10) == 0
        target.wait(5)
        assert target.returncode == -signal.SIGKILL
    assert not run_file.exists()


def test_the_guard_leaves_everything_after_a_clean_stop_and_spares_a_reused_pid() -> None:
    token = os.urandom(16).hex()
    with spawned([sys.executable, "-c", SLEEPER], start_new_session=True) as done_target, \
            spawned([sys.executable, "-c", SLEEPER], start_new_session=True) as reused_target:
        clean = guard(token)
        tell(clean, f"watch {done_target.pid} -", "done")
        assert clean.wait(10) == 0
        stale = guard(token)
        tell(stale, f"watch {reused_target.pid} some-other-process-identity")  # the pid now names another
        assert stale.stdin is not None
        stale.stdin.close()
        assert stale.wait(10) == 0
        assert done_target.poll() is None and reused_target.poll() is None


@linux_only
def test_a_previous_stack_is_stopped_through_its_supervisor_and_its_leftovers_killed(tmp_path: Path) -> None:
    token = os.urandom(16).hex()
    env = {**os.environ, TOKEN_ENV: token}
    previous_supervisor = [sys.executable, "-c", "import time; time.sleep(120)"]  # SIGTERM ends it
    with spawned(previous_supervisor) as supervisor, \
            spawned([sys.executable, "-c", SLEEPER], env=env, start_new_session=True) as child:
        run_file = tmp_path / "stack.json"
        write_run_file(run_file, RunRecord(
            token, RunProcess("supervisor", supervisor.pid, processes.identity(supervisor.pid)),
            (RunProcess("web", child.pid, processes.identity(child.pid), (8080,)),)))
        said: list[str] = []
        assert stop_previous_stack(run_file, said.append, grace_s=3) == 2
        assert said == [f"stopping the previous stack recorded in {run_file} (supervisor pid {supervisor.pid}, "
                        "2 processes)"]
        assert supervisor.wait(5) == -signal.SIGTERM
        assert child.wait(5) == -signal.SIGKILL  # it ignored SIGTERM
    assert not run_file.exists()


def test_a_recorded_pid_that_is_now_another_process_is_never_killed(tmp_path: Path) -> None:
    run_file = tmp_path / "stack.json"
    me = RunProcess("supervisor", os.getpid(), "not-this-process-identity")
    write_run_file(run_file, RunRecord(os.urandom(16).hex(), me, (RunProcess("web", os.getpid(), "no-such-start"),)))
    assert read_run_file(run_file) is not None
    assert stop_previous_stack(run_file, print) == 0  # were it killed, this test would not finish
    assert not run_file.exists()
