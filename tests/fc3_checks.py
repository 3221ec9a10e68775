"""Checks of a rendered Serverless Devs document (``s preview -o json``) against FC 3.0's rules.

``schema_problems`` validates each ``fc3`` / ``fc3-domain`` resource's props with the official
schemas in ``shared/schemas`` (beside the repository); ``rule_problems`` adds what those schemas
leave free-form or cannot say (PLATFORM.md sections 2-4 and 8): built-in runtimes serve one
request per instance, Kafka trigger run options and event source parameters, VPC settings.
Both return a list of problems, each naming its place; an empty list means the document passes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from functools import cache
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
SCHEMA_FILES = {"fc3": "fc3-props.schema.json", "fc3-domain": "fc3-domain-props.schema.json"}
DLQ_ARN = re.compile(r"acs:mns:[a-z0-9-]+:\d+:/queues/[\w.-]+")


def shared_dir() -> Path:
    """``shared/`` beside the repository (a worktree may sit one level deeper)."""
    for parent in REPO.parents:
        candidate = parent / "shared" / "schemas"
        if candidate.is_dir():
            return candidate.parent
    raise FileNotFoundError(f"no shared/schemas beside {REPO} or above it: the official schemas live there")


@cache
def schema(component: str) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads((shared_dir() / "schemas" / SCHEMA_FILES[component]).read_text())
    return loaded


def component_of(resource: Mapping[str, Any]) -> str:
    return str(resource.get("component", "")).split("@")[0]


def resources(document: Mapping[str, Any], component: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for key, resource in (document.get("resources") or {}).items():
        if component_of(resource) == component:
            yield key, resource.get("props") or {}


def schema_problems(document: Mapping[str, Any]) -> list[str]:
    import jsonschema  # type: ignore[import-untyped]  # a dev dependency without stubs

    problems = []
    for component in SCHEMA_FILES:
        validator = jsonschema.Draft7Validator(schema(component))
        for key, props in resources(document, component):
            for error in sorted(validator.iter_errors(props), key=lambda e: list(e.path)):
                where = ".".join(str(p) for p in error.path) or "(props)"
                problems.append(f"resources.{key}.props.{where}: {error.message}")
    if not any(True for _ in resources(document, "fc3")):
        problems.append("no fc3 resource")
    return problems


def is_builtin(runtime: str) -> bool:
    return not runtime.startswith("custom")


def _kafka_trigger_problems(where: str, config: Mapping[str, Any]) -> list[str]:
    problems = []
    run = config.get("runOptions") or {}
    if config.get("asyncInvocationType") is not False:
        problems.append(f"{where}.asyncInvocationType: must be false (a raised error must reach the retry)")
    if run.get("mode") != "event-streaming":
        problems.append(f"{where}.runOptions.mode: must be event-streaming")
    tasks = run.get("maximumTasks")
    if not isinstance(tasks, int) or isinstance(tasks, bool) or tasks < 1:
        problems.append(f"{where}.runOptions.maximumTasks: a whole number of at least 1, got {tasks!r}")
    tolerance = run.get("errorsTolerance")
    if tolerance not in ("ALL", "NONE"):
        problems.append(f"{where}.runOptions.errorsTolerance: ALL or NONE, got {tolerance!r}")
    retry = run.get("retryStrategy") or {}
    strategy = retry.get("PushRetryStrategy")
    limit = {"BACKOFF_RETRY": 3, "EXPONENTIAL_DECAY_RETRY": 176}.get(str(strategy))
    if limit is None:
        problems.append(f"{where}.runOptions.retryStrategy.PushRetryStrategy: unknown {strategy!r}")
    elif not isinstance(retry.get("MaximumRetryAttempts"), int) or not 0 <= retry["MaximumRetryAttempts"] <= limit:
        problems.append(f"{where}.runOptions.retryStrategy.MaximumRetryAttempts: 0..{limit} for {strategy}")
    window = run.get("batchWindow") or {}
    if not 1 <= int(window.get("CountBasedWindow") or 0) <= 10000:
        problems.append(f"{where}.runOptions.batchWindow.CountBasedWindow: 1..10000")
    if not 0 <= int(window.get("TimeBasedWindow", -1)) <= 15:
        problems.append(f"{where}.runOptions.batchWindow.TimeBasedWindow: 0..15 seconds")
    dead_letter = run.get("deadLetterQueue")
    if dead_letter is not None and not DLQ_ARN.fullmatch(str((dead_letter or {}).get("Arn", ""))):
        problems.append(f"{where}.runOptions.deadLetterQueue.Arn: an MNS queue ARN, got {dead_letter!r}")
    if tolerance == "ALL" and dead_letter is None:
        problems.append(f"{where}.runOptions: errorsTolerance ALL without a deadLetterQueue drops failed events")
    sink = (config.get("eventSinkConfig") or {}).get("deliveryOption") or {}
    if sink.get("mode") != "event-streaming" or sink.get("eventSchema") not in ("CloudEvents", "RawData"):
        problems.append(f"{where}.eventSinkConfig.deliveryOption: event-streaming with CloudEvents or RawData")
    source = config.get("eventSourceConfig") or {}
    if source.get("eventSourceType") != "Kafka":
        problems.append(f"{where}.eventSourceConfig.eventSourceType: must be Kafka")
    kafka = (source.get("eventSourceParameters") or {}).get("sourceKafkaParameters") or {}
    for name in ("RegionId", "InstanceId", "Topic", "ConsumerGroup"):
        if not isinstance(kafka.get(name), str) or not kafka[name]:
            problems.append(f"{where}.eventSourceConfig.eventSourceParameters.sourceKafkaParameters.{name}: required")
    if kafka.get("OffsetReset") not in ("latest", "earliest"):
        problems.append(f"{where}...sourceKafkaParameters.OffsetReset: latest or earliest")
    network = kafka.get("Network")
    if network not in ("Default", "PublicNetwork"):
        problems.append(f"{where}...sourceKafkaParameters.Network: Default or PublicNetwork, got {network!r}")
    if network == "PublicNetwork" and not all(kafka.get(k) for k in ("VpcId", "VSwitchIds", "SecurityGroupId")):
        problems.append(f"{where}...sourceKafkaParameters: PublicNetwork needs VpcId, VSwitchIds, SecurityGroupId")
    try:
        json.loads(str(config.get("eventRuleFilterPattern", "")))
    except ValueError:
        problems.append(f"{where}.eventRuleFilterPattern: must be JSON text")
    return problems


def _vpc_problems(where: str, vpc: Any) -> list[str]:
    if vpc == "auto":
        return []
    problems = []
    if not str(vpc.get("vpcId", "")).startswith("vpc-"):
        problems.append(f"{where}.vpcId: a VPC id (vpc-...), got {vpc.get('vpcId')!r}")
    switches = vpc.get("vSwitchIds")
    if not isinstance(switches, list) or not switches or not all(str(s).startswith("vsw-") for s in switches):
        problems.append(f"{where}.vSwitchIds: vSwitch ids (vsw-...), got {switches!r}")
    if not str(vpc.get("securityGroupId", "")).startswith("sg-"):
        problems.append(f"{where}.securityGroupId: a security group id (sg-...), got {vpc.get('securityGroupId')!r}")
    return problems


def rule_problems(document: Mapping[str, Any]) -> list[str]:
    problems = []
    for key, props in resources(document, "fc3"):
        where = f"resources.{key}.props"
        runtime = str(props.get("runtime", ""))
        if is_builtin(runtime) and "instanceConcurrency" in props:
            problems.append(f"{where}.instanceConcurrency: {runtime} serves one request per instance on FC 3.0")
        if runtime.startswith("custom.") and not isinstance((props.get("customRuntimeConfig") or {}).get("port"), int):
            problems.append(f"{where}.customRuntimeConfig.port: the port the bootstrap's server listens on")
        for name, value in (props.get("environmentVariables") or {}).items():
            if not isinstance(value, str):
                problems.append(f"{where}.environmentVariables.{name}: {value!r} is not a string")
        if "vpcConfig" in props:
            problems += _vpc_problems(f"{where}.vpcConfig", props["vpcConfig"])
        for index, trigger in enumerate(props.get("triggers") or []):
            if trigger.get("triggerType") == "eventbridge":
                problems += _kafka_trigger_problems(f"{where}.triggers[{index}].triggerConfig",
                                                    trigger.get("triggerConfig") or {})
    return problems
