"""Which functions exist, read from s.yaml (Serverless Devs 3.0.0, components fc3 / fc3-domain).

The local runtime and the cloud deployment share this one declaration. Interpolations that
Serverless Devs resolves are resolved here the same way: ``${env(NAME)}``,
``${env(NAME, default)}`` (quotes optional), ``${vars.a.b}`` and ``${resources.X.props.y}``;
an unset variable without a default becomes the empty string.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

_EXPRESSION = re.compile(r"\$\{([^{}]*)\}")
_ENV_CALL = re.compile(r"^env\(\s*(['\"]?)([A-Za-z_][A-Za-z0-9_]*)\1\s*(?:,\s*(['\"]?)(.*?)\3\s*)?\)$")


class SYamlError(ValueError):
    """s.yaml cannot be used; the message names the place."""


@dataclass(frozen=True)
class Trigger:
    name: str
    type: str
    config: Mapping[str, Any]
    qualifier: str = "LATEST"


@dataclass(frozen=True)
class FunctionSpec:
    resource: str  # the s.yaml resource key
    name: str
    runtime: str
    handler: str
    code: str
    environment: Mapping[str, str] = field(default_factory=dict)
    memory: int = 512
    timeout: int = 3
    initializer: str | None = None
    initializer_timeout: int = 3
    triggers: tuple[Trigger, ...] = ()
    async_retries: int = 3
    instance_concurrency: int = 1

    @property
    def http_trigger(self) -> Trigger | None:
        return next((t for t in self.triggers if t.type == "http"), None)

    @property
    def is_http(self) -> bool:
        return self.http_trigger is not None


@dataclass(frozen=True)
class Domain:
    resource: str
    props: Mapping[str, Any]


@dataclass(frozen=True)
class SYaml:
    path: Path
    name: str
    functions: tuple[FunctionSpec, ...]
    domains: tuple[Domain, ...]
    resources: Mapping[str, Any]  # every resource, interpolated

    def function(self, name: str) -> FunctionSpec | None:
        return next((f for f in self.functions if f.name == name), None)


def _env(call: str, environ: Mapping[str, str]) -> str:
    match = _ENV_CALL.match(call.strip())
    if match is None:
        raise SYamlError(f"unsupported expression ${{{call}}}")
    name, default = match.group(2), match.group(4)
    value = environ.get(name)
    return value if value not in (None, "") else (default or "")


def _lookup(root: Any, dotted: str, expression: str) -> Any:
    node = root
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            raise SYamlError(f"${{{expression}}}: no such value")
    return node


def interpolate(value: Any, environ: Mapping[str, str], variables: Mapping[str, Any],
                resources: Mapping[str, Any] | None = None) -> Any:
    """Resolves the expressions in every string of ``value``."""
    if isinstance(value, Mapping):
        return {k: interpolate(v, environ, variables, resources) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, environ, variables, resources) for v in value]
    if not isinstance(value, str):
        return value

    def evaluate(expression: str) -> Any:
        text = expression.strip()
        if text.startswith("env("):
            return _env(text, environ)
        if text.startswith("vars."):
            return interpolate(_lookup(variables, text[5:], expression), environ, variables, resources)
        if text.startswith("resources.") and resources is not None:
            return interpolate(_lookup(resources, text[10:], expression), environ, variables, resources)
        raise SYamlError(f"unsupported expression ${{{expression}}}")

    whole = _EXPRESSION.fullmatch(value)
    if whole:  # a lone expression keeps its type (a number from vars stays a number)
        return evaluate(whole.group(1))
    return _EXPRESSION.sub(lambda m: str(evaluate(m.group(1))), value)


def _function(key: str, props: Mapping[str, Any]) -> FunctionSpec:
    for required in ("functionName", "runtime"):
        if not props.get(required):
            raise SYamlError(f"resources.{key}.props.{required} is required")
    triggers = tuple(
        Trigger(str(t.get("triggerName", "")), str(t.get("triggerType", "")), t.get("triggerConfig") or {},
                str(t.get("qualifier") or "LATEST"))
        for t in props.get("triggers") or []
    )
    lifecycle = (props.get("instanceLifecycleConfig") or {}).get("initializer") or {}
    env = {str(k): "" if v is None else str(v) for k, v in (props.get("environmentVariables") or {}).items()}
    code = props.get("code", "")
    return FunctionSpec(
        resource=key,
        name=str(props["functionName"]),
        runtime=str(props["runtime"]),
        handler=str(props.get("handler", "")),
        code=str(code.get("src", "")) if isinstance(code, Mapping) else str(code),
        environment=env,
        memory=int(props.get("memorySize") or 512),
        timeout=int(props.get("timeout") or 3),
        initializer=lifecycle.get("handler") or None,
        initializer_timeout=int(lifecycle.get("timeout") or 3),
        triggers=triggers,
        async_retries=int((props.get("asyncInvokeConfig") or {}).get("maxAsyncRetryAttempts", 3)),
        instance_concurrency=int(props.get("instanceConcurrency") or 1),
    )


def load(path: Path, environ: Mapping[str, str] | None = None) -> SYaml:
    env = os.environ if environ is None else environ
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SYamlError(f"{path}: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("resources"), Mapping):
        raise SYamlError(f"{path}: expected a mapping with 'resources'")
    variables = document.get("vars") or {}
    raw_resources = document["resources"]
    resources = interpolate(raw_resources, env, variables, raw_resources)
    functions, domains = [], []
    for key, resource in resources.items():
        component = str((resource or {}).get("component", ""))
        props = (resource or {}).get("props") or {}
        if component.startswith("fc3-domain"):
            domains.append(Domain(key, props))
        elif component.split("@")[0] == "fc3":
            functions.append(_function(key, props))
    return SYaml(path, str(document.get("name", "")), tuple(functions), tuple(domains), resources)
