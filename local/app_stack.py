"""``barrage up --app MODULE``: any app's functions locally, from its declaration.

    broker (Tansu, the triggers' topics) -> dispatcher per Kafka trigger (KafkaSource-compatible,
    from the KafkaSource the declaration renders) -> the event function (functions-framework's app)
    HTTP functions (functions-framework's ASGI app), each on its own port, KAFKA_SERVER set for all

Every function runs under ``functions.serve``, as Knative runs it.

``MODULE`` holds the declaration as ``DEPLOYMENT`` (a ``functions.declaration.Deployment``) and
names the app its functions belong to through their FC handlers (``module.function``).
"""

from __future__ import annotations

import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from functions.declaration import Deployment, KafkaTrigger
from functions.serve import functions_framework_argv
from functions.targets import SOURCE_FILE
from local.supervisor import ChildSpec


class AppStackError(ValueError):
    """The module holds no usable declaration; one line."""


@dataclass(frozen=True)
class AppStackOptions:
    port: int = 8080  # the first function's port; the others follow
    broker_port: int = 9092
    data_dir: Path = Path(".barrage")
    kafka_server: str | None = None


def load_deployment(spec: str) -> Deployment:
    from local.render import RenderError
    from local.render import load_deployment as load

    try:
        return load(spec)
    except RenderError as exc:
        raise AppStackError(str(exc)) from None


def app_module(deployment: Deployment) -> str:
    """The module of the app, from the functions' FC handlers (all must agree)."""
    modules = {function.handler.rpartition(".")[0] for function in deployment.functions}
    if len(modules) != 1:
        raise AppStackError(f"{deployment.name}: the functions' handlers name {len(modules)} modules, not one app")
    return modules.pop()


def _listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
        except OSError:
            return False
        return True

    return ready


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "local.cli", *args]


def app_stack_specs(deployment: Deployment, options: AppStackOptions) -> tuple[list[ChildSpec], dict[str, str]]:
    from local.render import kafka_source_document
    from local.stack import broker_ready, server_env

    module = app_module(deployment)
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    specs: list[ChildSpec] = []
    urls: dict[str, str] = {}
    triggers = [(f, f.trigger) for f in deployment.functions if isinstance(f.trigger, KafkaTrigger)]
    topics = sorted({t.topic for _, t in triggers})
    bootstrap = options.kafka_server
    if bootstrap is None:
        bootstrap = f"127.0.0.1:{options.broker_port}"
        topic_args = [arg for topic in topics for arg in ("--topic", topic, "--topic", f"{topic}.dlq")]
        specs.append(ChildSpec("broker", _cli("broker", "--port", str(options.broker_port), *topic_args),
                               ready=broker_ready(bootstrap, topics), ports=(options.broker_port,)))
        urls["kafka"] = bootstrap
    sinks: dict[str, str] = {}
    for index, function in enumerate(deployment.functions):
        port = options.port + index
        env = {**server_env("1"), "FUNCTIONS_APP": module, "KAFKA_SERVER": bootstrap,
               "CONTAINER_CONCURRENCY": str(function.scaling.concurrency)}
        argv = functions_framework_argv(sys.executable, SOURCE_FILE, function.role, "127.0.0.1", port)
        specs.append(ChildSpec(function.role, argv, env=env, ready=_listening(port), ports=(port,)))
        urls[function.role] = f"http://127.0.0.1:{port}/"
        sinks[function.service] = urls[function.role]
    for function, trigger in triggers:
        manifest = data_dir / f"{trigger.source_name}.yaml"
        manifest.write_text(yaml.safe_dump(kafka_source_document(function, trigger, deployment), sort_keys=False),
                            encoding="utf-8")
        specs.append(ChildSpec(
            f"dispatch-{trigger.source_name}",
            _cli("dispatch", "--manifest", str(manifest), "--bootstrap", bootstrap,
                 "--service", f"{function.service}={sinks[function.service]}", "--dlq",
                 "--initial-offset", "earliest"),
            env={"KAFKA_SERVER": bootstrap}))
    return specs, urls
