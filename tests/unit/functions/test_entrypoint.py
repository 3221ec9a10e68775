"""The entrypoint starts ``functions.serve`` in this process, for both workload classes, with the planned command line.

Servers are stubbed here (nothing listens); tests/integration/test_entrypoint.py starts them for real.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from functions import entrypoint, serve

ENVIRON = {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage", "WORKERS": "1",
           "HOST": "127.0.0.1", "PORT": "9123"}


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """What reached execve or functions.serve's command line; the process environment is restored afterwards."""
    seen: dict[str, Any] = {"exit": 0}

    def execve(path: str, argv: list[str], env: dict[str, str]) -> None:
        seen["execve"] = argv

    def serve_main(argv: list[str]) -> int:
        seen["serve"] = argv
        seen["environ"] = {name: os.environ.get(name) for name in ("FUNCTIONS_APP", "FUNCTION_TARGET", "WORKERS")}
        return int(seen["exit"])

    monkeypatch.setattr(os, "environ", dict(os.environ))
    monkeypatch.setattr(os, "execve", execve)
    monkeypatch.setattr(serve, "main", serve_main)
    return seen


@pytest.mark.parametrize("workload_class", ["fc", "knative"])
def test_the_server_runs_in_this_process_with_the_planned_command_line(seen: dict[str, Any],
                                                                       workload_class: str) -> None:
    environ = {**ENVIRON, "WORKLOAD_CLASS": workload_class}
    launch = entrypoint.plan(environ)
    assert launch.argv[1:3] == ("-m", "functions.serve")
    assert entrypoint.main(environ) == 0
    assert "execve" not in seen  # the app plan() imported serves; no second interpreter imports it again
    assert seen["serve"] == list(launch.argv[3:])
    assert seen["environ"] == {"FUNCTIONS_APP": "functions.barrage_app", "FUNCTION_TARGET": "homepage",
                               "WORKERS": "1"}


def test_the_exit_code_is_the_servers(seen: dict[str, Any]) -> None:
    seen["exit"] = 3  # a failed start
    assert entrypoint.main({**ENVIRON, "WORKLOAD_CLASS": "fc"}) == 3
