"""s.yaml and s.public.yaml read by the local FC's reader: the official schemas, FC 3.0's rules,
no secrets, real handlers. (The same files through the real CLI: tests/integration/test_s_preview.py.)"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from local.fc.runtime import resolve_handler
from local.fc.syaml import SYamlError, interpolate, load
from local.render import FC_NETWORKS
from tests.fc3_checks import rule_problems, schema, schema_problems
from tests.readme_deploy import deployments

jsonschema: Any = pytest.importorskip("jsonschema")  # a dev dependency without type stubs

REPO = Path(__file__).resolve().parents[3]
FILES = [REPO / n.file for n in FC_NETWORKS]
DEPLOY_ENV = {d.template.name: d.env for d in deployments()}


def document(path: Path, environ: dict[str, str]) -> dict[str, Any]:
    return {"resources": load(path, environ).resources}


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_resources_pass_the_official_schemas_and_fc3_rules(path: Path) -> None:
    rendered = document(path, DEPLOY_ENV[path.name])
    assert schema_problems(rendered) == []
    assert rule_problems(rendered) == []
    declaration = load(path, DEPLOY_ENV[path.name])
    assert {f.name for f in declaration.functions} == {"barrage-homepage", "barrage-processor"}
    assert len(declaration.domains) == 1


def test_schema_and_rule_checks_can_fail() -> None:
    rendered = document(REPO / "s.yaml", DEPLOY_ENV["s.yaml"])
    props = rendered["resources"]["processor"]["props"]
    props["runtime"] = "python3.11"  # not offered by fc3
    assert any("runtime" in p for p in schema_problems(rendered))
    props["runtime"], props["instanceConcurrency"] = "python3.10", 2
    assert any("one request per instance" in p for p in rule_problems(rendered))
    del props["instanceConcurrency"]
    run = props["triggers"][0]["triggerConfig"]["runOptions"]
    run["errorsTolerance"] = "ALL"
    assert any("drops failed events" in p for p in rule_problems(rendered))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"functionName": "f"}, schema("fc3"))


def test_homepage_is_http_and_domain_routes_to_it() -> None:
    declaration = load(REPO / "s.yaml", DEPLOY_ENV["s.yaml"])
    homepage = declaration.function("barrage-homepage")
    assert homepage is not None and homepage.is_http and homepage.is_custom
    assert homepage.http_trigger is not None and homepage.http_trigger.config["authType"] == "anonymous"
    routes = declaration.domains[0].props["routeConfig"]["routes"]
    assert routes[0]["functionName"] == "barrage-homepage"


SECRET_NAMES = re.compile(r"(PWD|PASSWORD|SECRET|KEYID|TOKEN|KEY)$", re.IGNORECASE)


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_no_secret_literals(path: Path) -> None:
    raw = yaml.safe_load(path.read_text())
    for resource in raw["resources"].values():
        env = (resource["props"].get("environmentVariables") or {})
        for name, value in env.items():
            assert name not in ("OTS_KEYID", "OTS_SECRET"), "Tablestore keys come from the function role"
            if SECRET_NAMES.search(name):
                assert re.fullmatch(r"\$\{env\('[A-Z_]+'(, '')?\)\}", str(value)), f"{name} must come from env()"
    text = path.read_text()
    assert not re.search(r"LTAI[0-9A-Za-z]{12,}", text), "an AccessKey id literal"
    assert "xxx" not in text


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_handler_resolves_and_custom_runtimes_have_their_bootstrap(path: Path) -> None:
    for spec in load(path, {}, missing="empty").functions:
        if spec.is_custom:
            bootstrap = REPO / "bootstrap"
            assert bootstrap.is_file() and os.access(bootstrap, os.X_OK), "the custom runtime starts ./bootstrap"
            handlers: tuple[str | None, ...] = (spec.initializer,)
        else:
            handlers = (spec.handler, spec.initializer)
        for handler in filter(None, handlers):
            assert callable(resolve_handler(REPO, handler)), handler


def test_interpolation() -> None:
    env = {"A": "1", "EMPTY": ""}
    variables = {"region": "${env('R', 'cn-hangzhou')}", "n": 3}
    assert interpolate("${env('A')}-${env('B', 'dflt')}-${env('EMPTY', 'e')}", env, variables) == "1-dflt-e"
    assert interpolate("${vars.region}", env, variables) == "cn-hangzhou"
    assert interpolate("${vars.n}", env, variables) == 3
    assert interpolate("${env(A)}", env, variables) == "1"  # the CLI reads unquoted text as one name
    assert interpolate("${env('MISSING')}", env, variables, missing="empty") == ""
    for refused, message in [("${file(./x)}", "unsupported expression"), ("${env('MISSING')}", "not found"),
                             ("${env('EMPTY')}", "not found"), ("${env(A, b)}", r"env\('A, b'\) not found"),
                             ("${env(A, 'b')}", "not quoted"), ("${env('A', 2)}", "not a string"),
                             ("${vars.nope}", "not found"), ("${ vars.n }", "unsupported")]:
        with pytest.raises(SYamlError, match=message):
            interpolate(refused, env, variables)
