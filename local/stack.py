"""The local topology that ``barrage up`` runs."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from local.supervisor import ChildSpec, Supervisor

FUNCTIONS_SOURCE = Path(__file__).resolve().parent.parent / "functions" / "main.py"


@dataclass(frozen=True)
class StackOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".barrage")
    bus: str = "memory"


def functions_framework_argv(target: str, host: str, port: int) -> list[str]:
    return [
        sys.executable, "-m", "functions_framework", "--source", str(FUNCTIONS_SOURCE),
        "--target", target, "--host", host, "--port", str(port),
    ]


def stack_specs(options: StackOptions) -> list[ChildSpec]:
    data_dir = options.data_dir.resolve()
    env = {"BARRAGE_DB": str(data_dir / "barrage.db"), "BARRAGE_BUS": options.bus, "ROLE": "homepage"}
    health_host = "127.0.0.1" if options.host in ("0.0.0.0", "") else options.host
    return [
        ChildSpec(
            name="homepage",
            argv=functions_framework_argv("homepage", options.host, options.port),
            env=env,
            health_url=f"http://{health_host}:{options.port}/healthz",
            ports=(options.port,),
        )
    ]


def run_stack(options: StackOptions) -> tuple[Supervisor, dict[str, str]]:
    options.data_dir.mkdir(parents=True, exist_ok=True)
    supervisor = Supervisor(stack_specs(options))
    supervisor.start()
    host = "127.0.0.1" if options.host in ("0.0.0.0", "") else options.host
    return supervisor, {"homepage": f"http://{host}:{options.port}/"}
