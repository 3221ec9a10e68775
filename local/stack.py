"""The local topology that ``barrage up`` runs, each part a child process.

    broker (Tansu) -> dispatcher (KafkaSource-compatible) -> processor (functions-framework's app)
    HomePage (functions-framework's ASGI app) -> broker;  HomePage and processor -> store
    store: a SQLite file, or the Tablestore emulator (``--store tablestore``)

``--bus memory`` keeps the single-process mode: the HomePage processes in-process.
The run file (``stack.json`` in the data directory) records the processes and ports of the stack
that runs; ``prepare_stack`` stops whatever an earlier stack on that directory left running.
"""

from __future__ import annotations

import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import yaml

from functions.serve import functions_framework_argv
from local.runfile import RUN_FILE_NAME, RunFileError, stop_previous_stack
from local.supervisor import ChildSpec, StackError, Supervisor

REPO_ROOT = Path(__file__).resolve().parent.parent
FUNCTIONS_SOURCE = REPO_ROOT / "functions" / "main.py"
KNATIVE_DIR = REPO_ROOT / "knative"
KAFKASOURCE_MANIFEST = KNATIVE_DIR / "kafkasource.yaml"
PROCESSOR_SERVICE = "barrage-process"
EMULATOR_KEYS = {"OTS_KEYID": "emulator-key", "OTS_SECRET": "emulator-secret", "OTS_INSTANCENAME": "barrage"}


@dataclass(frozen=True)
class StackOptions:
    host: str = "127.0.0.1"
    port: int = 8080
    data_dir: Path = Path(".barrage")
    bus: str = "kafka"  # kafka: the whole topology; memory: the HomePage alone
    store: str = "sqlite"  # sqlite | tablestore (the emulator)
    processor_port: int = 8081
    processors: int = 1  # processor instances (server workers), as pods behind one Service
    broker_port: int = 9092
    tablestore_port: int = 8089
    fc_port: int | None = None  # also run the local FC API
    batch_size: int = 0  # dispatcher: 0 per event (KafkaSource), N CloudEvents batches
    kafka_server: str | None = None  # an existing broker instead of the bundled one
    container_concurrency: int | None = None  # default: the processor Service manifest


def container_concurrency_from_manifests(directory: Path = KNATIVE_DIR, default: int = 2) -> int:
    """``containerConcurrency`` of the processor's Knative Service, as the cluster would apply it."""
    for path in sorted(directory.glob("*.yaml")):
        try:
            documents = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
        except (OSError, yaml.YAMLError):
            continue
        for document in documents:
            if not isinstance(document, dict) or document.get("kind") != "Service":
                continue
            if (document.get("metadata") or {}).get("name") != PROCESSOR_SERVICE:
                continue
            spec = ((document.get("spec") or {}).get("template") or {}).get("spec") or {}
            value = spec.get("containerConcurrency")
            if isinstance(value, int) and value >= 0:
                return value
    return default


def _ff(target: str, host: str, port: int) -> list[str]:
    # Every target is an ASGI app: functions-framework's ASGI app under our server, as Knative runs it.
    return functions_framework_argv(sys.executable, FUNCTIONS_SOURCE, target, host, port)


def server_env(workers: str | None = None) -> dict[str, str]:
    """The servers' settings the stack gives its functions (the environment's own win where it has them)."""
    env = {"WORKERS": workers or os.environ.get("WORKERS", "1"),
           # A stop is quick locally (SIGINT, then SIGKILL after KILL_AFTER_S): open event streams
           # are cut after a second rather than the 30 s a platform's SIGTERM gives them.
           "SERVER_GRACEFUL_TIMEOUT_S": os.environ.get("SERVER_GRACEFUL_TIMEOUT_S", "1")}
    return env


def _barrage(*args: str) -> list[str]:
    return [sys.executable, "-m", "local.cli", *args]


def broker_ready(bootstrap: str, topics: Sequence[str]) -> Callable[[], bool]:
    """True once the broker answers metadata and holds every one of ``topics``."""
    host, _, port = bootstrap.rpartition(":")

    def ready() -> bool:
        import logging
        import socket

        from confluent_kafka.admin import AdminClient

        try:  # a cheap check first, so librdkafka does not log refused connections
            socket.create_connection((host, int(port)), timeout=0.5).close()
        except OSError:
            return False
        quiet = logging.getLogger("barrage.stack.kafka-probe")
        quiet.propagate = False
        try:
            config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": quiet}
            metadata = AdminClient(config).list_topics(timeout=1)
        except Exception:
            return False
        return all(topic in metadata.topics for topic in topics)

    return ready


def stack_specs(options: StackOptions) -> tuple[list[ChildSpec], dict[str, str]]:
    data_dir = options.data_dir.resolve()
    local = "127.0.0.1" if options.host in ("0.0.0.0", "") else options.host
    store_env: dict[str, str] = {"BARRAGE_DB": str(data_dir / "barrage.db")}
    specs: list[ChildSpec] = []
    urls: dict[str, str] = {}
    if options.store == "tablestore":
        endpoint = f"http://127.0.0.1:{options.tablestore_port}"
        store_env = {"OTS_ENDPOINT": endpoint, "TABLE_NAME": "barrage", **EMULATOR_KEYS}
        specs.append(ChildSpec(
            "tablestore",
            _barrage("emulate", "tablestore", "--port", str(options.tablestore_port),
                     "--data", str(data_dir / "tablestore.db")),
            health_url=f"{endpoint}/_emulator/faults", ports=(options.tablestore_port,),
            stop_signal=signal.SIGINT,  # its Ctrl-C path closes the SQLite file
        ))
        urls["tablestore"] = endpoint
    if options.bus == "memory":
        specs.append(ChildSpec(
            "homepage", _ff("homepage", options.host, options.port),
            env={**store_env, **server_env(), "BARRAGE_BUS": "memory", "ROLE": "homepage"},
            health_url=f"http://{local}:{options.port}/healthz", ports=(options.port,), stop_signal=signal.SIGINT,
        ))
        urls["homepage"] = f"http://{local}:{options.port}/"
        return specs, urls

    bootstrap = options.kafka_server
    if bootstrap is None:
        bootstrap = f"127.0.0.1:{options.broker_port}"
        specs.append(ChildSpec(
            "broker",
            _barrage("broker", "--port", str(options.broker_port), "--topic", "barrage-info",
                     "--topic", "barrage-info.dlq"),
            ready=broker_ready(bootstrap, ["barrage-info"]), ports=(options.broker_port,),
            stop_signal=signal.SIGINT,  # reaches Tansu too: on SIGTERM it waits ~5 s for clients
        ))
        urls["kafka"] = bootstrap
    concurrency = options.container_concurrency
    if concurrency is None:
        concurrency = container_concurrency_from_manifests()
    processor_url = f"http://127.0.0.1:{options.processor_port}/"
    specs.append(ChildSpec(
        "processor", _ff("processor", "127.0.0.1", options.processor_port),
        env={**store_env, **server_env(str(options.processors)), "ROLE": "processor",
             "CONTAINER_CONCURRENCY": str(concurrency)},
        health_url=f"{processor_url}healthz", ports=(options.processor_port,),
    ))
    urls["processor"] = processor_url
    dispatch = _barrage("dispatch", "--manifest", str(KAFKASOURCE_MANIFEST), "--bootstrap", bootstrap,
                        "--service", f"{PROCESSOR_SERVICE}={processor_url}", "--dlq",
                        "--initial-offset", "earliest")
    if options.batch_size:
        dispatch += ["--batch-size", str(options.batch_size)]
    specs.append(ChildSpec("dispatcher", dispatch, env={"KAFKA_SERVER": bootstrap}))
    specs.append(ChildSpec(
        "homepage", _ff("homepage", options.host, options.port),
        env={**store_env, **server_env(), "KAFKA_SERVER": bootstrap, "BARRAGE_BUS": "kafka", "ROLE": "homepage"},
        health_url=f"http://{local}:{options.port}/healthz", ports=(options.port,), stop_signal=signal.SIGINT,
    ))
    urls["homepage"] = f"http://{local}:{options.port}/"
    if options.fc_port is not None:
        specs.append(ChildSpec(
            "fc", _barrage("fc", "serve", "--port", str(options.fc_port)),
            env={**store_env, "KAFKA_SERVER": bootstrap},
            health_url=f"http://127.0.0.1:{options.fc_port}/", ports=(options.fc_port,),
        ))
        urls["fc-api"] = f"http://127.0.0.1:{options.fc_port}/"
    return specs, urls


def prepare_stack(options: StackOptions, say: Callable[[str], None], out: IO[str] = sys.stdout,
                  ) -> tuple[Supervisor, dict[str, str]]:
    """The stack's supervisor, not started, once whatever an earlier stack on the same data
    directory left running is stopped. StackError if that cannot be done."""
    options.data_dir.mkdir(parents=True, exist_ok=True)
    specs, urls = stack_specs(options)
    return prepare_supervisor(specs, options.data_dir, say, out), urls


def prepare_supervisor(specs: list[ChildSpec], data_dir: Path, say: Callable[[str], None],
                       out: IO[str] = sys.stdout) -> Supervisor:
    """A supervisor for ``specs`` (any app's stack) that records itself in ``data_dir``'s run file."""
    data_dir.mkdir(parents=True, exist_ok=True)
    run_file = data_dir.resolve() / RUN_FILE_NAME
    try:
        stop_previous_stack(run_file, say)
    except RunFileError as exc:
        raise StackError(str(exc)) from None
    return Supervisor(specs, out=out, run_file=run_file)
