"""The entrypoint's two ways to start a server: uvicorn in this process (fc), functions-framework by exec (knative).

Servers are stubbed here (nothing listens); tests/integration/test_entrypoint.py starts them for real.
"""

from __future__ import annotations

import os
from typing import Any, NoReturn

import pytest
from uvicorn.main import main as uvicorn_command

from functions import entrypoint

ENVIRON = {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage", "WORKERS": "1",
           "HOST": "127.0.0.1", "PORT": "9123"}


class Execed(Exception):
    pass


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What reached execve or uvicorn's command line; the process environment is restored afterwards."""
    seen: dict[str, Any] = {"exit": 0}

    def execve(path: str, argv: list[str], env: dict[str, str]) -> NoReturn:
        seen["execve"] = argv
        raise Execed

    def uvicorn_cli(args: list[str], prog_name: str) -> NoReturn:
        seen["uvicorn"] = args
        seen["environ"] = {name: os.environ.get(name) for name in ("FUNCTIONS_APP", "FUNCTION_TARGET", "WORKERS")}
        raise SystemExit(seen["exit"])  # as click ends every run

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(uvicorn_command, "main", uvicorn_cli)
    return seen


def test_fc_runs_uvicorn_in_this_process_with_the_planned_command_line(seen: dict[str, Any]) -> None:
    environ = {**ENVIRON, "WORKLOAD_CLASS": "fc"}
    launch = entrypoint.plan(environ)
    assert launch.argv[1:3] == ("-m", "uvicorn")
    assert entrypoint.main(environ) == 0
    assert "execve" not in seen  # the app plan() imported serves; no second interpreter imports it again
    assert seen["uvicorn"] == list(launch.argv[3:])
    assert seen["environ"] == {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage",
                               "WORKERS": "1"}


def test_fc_exits_with_uvicorns_code(seen: dict[str, Any]) -> None:
    seen["exit"] = 3  # uvicorn's STARTUP_FAILURE
    assert entrypoint.main({**ENVIRON, "WORKLOAD_CLASS": "fc"}) == 3


def test_knative_still_execs_functions_framework(seen: dict[str, Any]) -> None:
    with pytest.raises(Execed):
        entrypoint.main({**ENVIRON, "WORKLOAD_CLASS": "knative"})
    assert seen["execve"][1:4] == ["-m", "functions_framework", "--asgi"]
    assert "uvicorn" not in seen
