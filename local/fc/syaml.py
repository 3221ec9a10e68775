"""Which functions exist, read from s.yaml (Serverless Devs 3.0.0, components fc3 / fc3-domain).

The local runtime and the cloud deployment share this one declaration, and this reader agrees
with Serverless Devs' own renderer (``s preview``, tests/integration/local/test_syaml_agrees.py)
on every form it accepts; anything else is refused rather than read differently:

- ``${env('NAME')}``: the variable; unset or empty is an error (``env('NAME') not found``);
- ``${env('NAME', 'default')}``: the variable, else the default (single or double quotes);
- ``${env(NAME)}``: the CLI reads the whole unquoted text as the name, so ``${env(NAME)}`` works
  and ``${env(NAME, default)}`` looks up a variable called ``NAME, default`` (an error);
- refused here: an unquoted argument beside quoted ones (the CLI reads it as undefined: the
  variable would be ignored) and a default that is not a string (its type would depend on
  whether the variable is set; FC's environment values are strings);
- ``${vars.a.b}`` and ``${resources.X.props.y}`` (a lone expression keeps its value's type).

``load(..., missing="empty")`` is the local FC's relaxation: a required variable that is unset
evaluates to "" (listed in ``SYaml.defaulted``), so ``barrage fc serve`` runs without the
deployer's exports.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

_EXPRESSION = re.compile(r"\$\{([^{}]*)\}")
_ENV_CALL = re.compile(r"^env\((.*)\)$", re.DOTALL)
_DOTTED = re.compile(r"^[A-Za-z_][\w-]*(?:\.[A-Za-z_][\w-]*)*$")
# One env() argument: a quoted string (no escapes), a number, a keyword or a bare identifier.
_ARGUMENT = re.compile(r"""\s*(?:'([^'\\]*)'|"([^"\\]*)"|(-?\d+(?:\.\d+)?)|(true|false|null|undefined)|"""
                       r"""([A-Za-z_$][\w$]*))\s*(,|$)""")
Missing = Literal["error", "empty"]


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
    custom_runtime_port: int = 9000  # customRuntimeConfig / customContainerConfig port (CAPort)
    custom_runtime_command: tuple[str, ...] = ()  # customRuntimeConfig command + args; () is ./bootstrap
    image: str = ""  # customContainerConfig.image

    @property
    def is_custom(self) -> bool:
        """A custom runtime or container: FC starts a server and speaks HTTP to it."""
        return self.runtime.startswith("custom")

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
    variables: Mapping[str, Any] = field(default_factory=dict)  # vars, interpolated
    defaulted: tuple[str, ...] = ()  # required variables that were unset (missing="empty" only)

    def function(self, name: str) -> FunctionSpec | None:
        return next((f for f in self.functions if f.name == name), None)


@dataclass
class _Evaluation:
    environ: Mapping[str, str]
    missing: Missing = "error"
    defaulted: list[str] = field(default_factory=list)


def _arguments(text: str, call: str) -> list[tuple[str, str]]:
    """(kind, value) per argument: kind is "string", "literal" or "name"."""
    found: list[tuple[str, str]] = []
    position = 0
    while position < len(text):
        match = _ARGUMENT.match(text, position)
        if match is None or match.end() == position:
            raise SYamlError(f"${{{call}}}: unsupported env() arguments (quote them: env('NAME', 'default'))")
        single, double, number, keyword, name, _ = match.groups()
        if single is not None or double is not None:
            found.append(("string", single if single is not None else double))
        elif number is not None or keyword is not None:
            found.append(("literal", number or keyword))
        else:
            found.append(("name", name))
        position = match.end()
    return found


def _env(call: str, evaluation: _Evaluation) -> str:
    match = _ENV_CALL.match(call)
    assert match is not None
    inner = match.group(1)
    default: str | None = None
    if "'" not in inner and '"' not in inner:
        name = inner  # the CLI quotes the whole unquoted text: env(A, b) looks up "A, b"
    else:
        arguments = _arguments(inner, call)
        if len(arguments) not in (1, 2):
            raise SYamlError(f"${{{call}}}: env() takes a name and an optional default")
        for kind, value in arguments:
            if kind == "name":
                raise SYamlError(f"${{{call}}}: {value} is not quoted (Serverless Devs reads it as undefined)")
        (kind, name), *rest = arguments
        if kind != "string":
            raise SYamlError(f"${{{call}}}: the variable name must be a quoted string")
        if rest:
            kind, default = rest[0]
            if kind != "string":
                raise SYamlError(f"${{{call}}}: the default {default} is not a string; quote it ('{default}')")
    found = evaluation.environ.get(name)
    if found:
        return found
    if default is not None:
        return default
    if evaluation.missing == "empty":
        evaluation.defaulted.append(name)
        return ""
    raise SYamlError(f"env('{name}') not found")


def _lookup(root: Any, dotted: str, expression: str) -> Any:
    node = root
    for part in dotted.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        else:
            raise SYamlError(f"${{{expression}}} not found")
    return node


def _interpolate(value: Any, evaluation: _Evaluation, variables: Mapping[str, Any],
                 resources: Mapping[str, Any] | None) -> Any:
    if isinstance(value, Mapping):
        return {k: _interpolate(v, evaluation, variables, resources) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, evaluation, variables, resources) for v in value]
    if not isinstance(value, str):
        return value

    def evaluate(expression: str) -> Any:
        if _ENV_CALL.match(expression):
            return _env(expression, evaluation)
        # No whitespace is trimmed: the CLI finds no ``vars. x`` or `` vars.x`` either.
        for prefix, root in (("vars.", variables), ("resources.", resources)):
            if expression.startswith(prefix) and root is not None and _DOTTED.match(expression[len(prefix):]):
                found = _lookup(root, expression[len(prefix):], expression)
                return _interpolate(found, evaluation, variables, resources)
        raise SYamlError(f"unsupported expression ${{{expression}}}")

    whole = _EXPRESSION.fullmatch(value)
    if whole:  # a lone expression keeps its type (a number from vars stays a number)
        return evaluate(whole.group(1))
    return _EXPRESSION.sub(lambda m: str(evaluate(m.group(1))), value)


def interpolate(value: Any, environ: Mapping[str, str], variables: Mapping[str, Any],
                resources: Mapping[str, Any] | None = None, missing: Missing = "error") -> Any:
    """Resolves the expressions in every string of ``value``."""
    return _interpolate(value, _Evaluation(environ, missing), variables, resources)


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
    raw_env = props.get("environmentVariables") or {}
    if not isinstance(raw_env, Mapping):
        raise SYamlError(f"resources.{key}.props.environmentVariables must be a mapping")
    for name, value in raw_env.items():
        if not isinstance(value, str):
            # FC takes strings only (the fc3 schema says so too): 12 must be written '12'.
            raise SYamlError(f"resources.{key}.props.environmentVariables.{name}: {value!r} is not a string; quote it")
    env = {str(k): v for k, v in raw_env.items()}
    custom = props.get("customRuntimeConfig") or {}
    container = props.get("customContainerConfig") or {}
    command = [str(c) for c in [*(custom.get("command") or container.get("command") or []),
                                *(custom.get("args") or container.get("args") or [])]]
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
        custom_runtime_port=int(custom.get("port") or container.get("port") or 9000),
        custom_runtime_command=tuple(command),
        image=str(container.get("image", "")),
    )


def load(path: Path, environ: Mapping[str, str] | None = None, missing: Missing = "error") -> SYaml:
    """s.yaml with its expressions resolved against ``environ`` (default: this process's)."""
    evaluation = _Evaluation(os.environ if environ is None else environ, missing)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise SYamlError(f"{path}: {exc}") from None
    if not isinstance(document, Mapping) or not isinstance(document.get("resources"), Mapping):
        raise SYamlError(f"{path}: expected a mapping with 'resources'")
    variables = document.get("vars") or {}
    if not isinstance(variables, Mapping):
        raise SYamlError(f"{path}: vars must be a mapping")
    raw_resources = document["resources"]
    resolved_variables = _interpolate(variables, evaluation, variables, raw_resources)
    resources = _interpolate(raw_resources, evaluation, variables, raw_resources)
    functions, domains = [], []
    for key, resource in resources.items():
        component = str((resource or {}).get("component", ""))
        props = (resource or {}).get("props") or {}
        if component.startswith("fc3-domain"):
            domains.append(Domain(key, props))
        elif component.split("@")[0] == "fc3":
            functions.append(_function(key, props))
    return SYaml(path, str(document.get("name", "")), tuple(functions), tuple(domains), resources,
                 resolved_variables, tuple(dict.fromkeys(evaluation.defaulted)))
