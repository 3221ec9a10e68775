"""s.yaml: valid against Serverless Devs' fc3 schemas, our own trigger checks, no secrets, real handlers."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from local.fc.runtime import resolve_handler
from local.fc.syaml import SYamlError, interpolate, load

jsonschema: Any = pytest.importorskip("jsonschema")  # a dev dependency without type stubs

REPO = Path(__file__).resolve().parents[3]
SCHEMAS = REPO.parent / "shared" / "schemas"
S_YAML = REPO / "s.yaml"
# A deployer's environment: every ${env(...)} set, so the schema sees real values.
DEPLOY_ENV = {
    "REGION": "cn-shanghai", "BARRAGE_FC_ROLE_ARN": "acs:ram::1234567890:role/barrage-fc",
    "KAFKA_SERVER": "b1:9093,b2:9093", "KAFKA_USER": "u", "KAFKA_PWD": "p", "KAFKA_INSTANCE_ID": "alikafka_post-cn-x",
    "OTS_ENDPOINT": "https://i.cn-shanghai.ots.aliyuncs.com",
    "BARRAGE_DLQ_ARN": "acs:mns:cn-shanghai:1234567890:/queues/dlq",
}


def schema(name: str) -> dict[str, Any]:
    path = SCHEMAS / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the schemas live in ../shared/schemas beside the repository")
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


@pytest.mark.parametrize("environ", [DEPLOY_ENV, {}], ids=["deployer-env", "empty-env"])
def test_fc3_resources_are_valid_against_the_official_schemas(environ: dict[str, str]) -> None:
    declaration = load(S_YAML, environ)
    assert {f.name for f in declaration.functions} == {"barrage-homepage", "barrage-processor"}
    for resource in declaration.resources.values():
        if resource["component"] == "fc3":
            jsonschema.validate(resource["props"], schema("fc3-props.schema.json"))
    assert len(declaration.domains) == 1
    jsonschema.validate(dict(declaration.domains[0].props), schema("fc3-domain-props.schema.json"))


def test_schema_validation_can_fail() -> None:
    props = dict(load(S_YAML, DEPLOY_ENV).resources["homepage"]["props"])
    props["runtime"] = "python3.11"  # not offered by fc3
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(props, schema("fc3-props.schema.json"))


def kafka_trigger() -> dict[str, Any]:
    spec = load(S_YAML, DEPLOY_ENV).function("barrage-processor")
    assert spec is not None
    trigger = next(t for t in spec.triggers if t.type == "eventbridge")
    return dict(trigger.config)


def test_kafka_trigger_run_options() -> None:
    run = kafka_trigger()["runOptions"]
    assert run["mode"] == "event-streaming"
    assert run["errorsTolerance"] in ("ALL", "NONE")
    assert isinstance(run["maximumTasks"], int) and run["maximumTasks"] >= 1
    retry = run["retryStrategy"]
    assert retry["PushRetryStrategy"] in ("BACKOFF_RETRY", "EXPONENTIAL_DECAY_RETRY")
    assert 0 <= retry["MaximumRetryAttempts"] <= (3 if retry["PushRetryStrategy"] == "BACKOFF_RETRY" else 176)
    window = run["batchWindow"]
    assert 1 <= window["CountBasedWindow"] <= 10000 and 0 <= window["TimeBasedWindow"] <= 15
    if run["errorsTolerance"] == "ALL":  # skipped batches must land somewhere
        assert re.fullmatch(r"acs:mns:[a-z0-9-]+:\d+:/queues/[\w-]+", run["deadLetterQueue"]["Arn"])


def test_kafka_trigger_event_source_and_sink() -> None:
    config = kafka_trigger()
    assert config["asyncInvocationType"] is False  # a raised error must reach EventBridge's retry
    json.loads(config["eventRuleFilterPattern"])
    assert config["eventSinkConfig"]["deliveryOption"] == {"mode": "event-streaming", "eventSchema": "CloudEvents"}
    source = config["eventSourceConfig"]
    assert source["eventSourceType"] == "Kafka"
    kafka = source["eventSourceParameters"]["sourceKafkaParameters"]
    assert set(kafka) >= {"RegionId", "InstanceId", "Topic", "ConsumerGroup", "OffsetReset", "Network"}
    assert kafka["OffsetReset"] in ("latest", "earliest") and kafka["Topic"] == "barrage-info"


def test_homepage_is_http_and_domain_routes_to_it() -> None:
    declaration = load(S_YAML, DEPLOY_ENV)
    homepage = declaration.function("barrage-homepage")
    assert homepage is not None and homepage.is_http
    assert homepage.http_trigger is not None and homepage.http_trigger.config["authType"] == "anonymous"
    routes = declaration.domains[0].props["routeConfig"]["routes"]
    assert routes[0]["functionName"] == "barrage-homepage"


SECRET_NAMES = re.compile(r"(PWD|PASSWORD|SECRET|KEYID|TOKEN|KEY)$", re.IGNORECASE)


def test_no_secret_literals() -> None:
    raw = yaml.safe_load(S_YAML.read_text())
    for resource in raw["resources"].values():
        env = (resource["props"].get("environmentVariables") or {})
        for name, value in env.items():
            assert name not in ("OTS_KEYID", "OTS_SECRET"), "Tablestore keys come from the function role"
            if SECRET_NAMES.search(name):
                assert re.fullmatch(r"\$\{env\([A-Z_]+\)\}", str(value)), f"{name} must come from ${{env(...)}}"
    text = S_YAML.read_text()
    assert not re.search(r"LTAI[0-9A-Za-z]{12,}", text), "an AccessKey id literal"
    assert "xxx" not in text


def test_every_handler_resolves_to_a_callable_in_the_code_package() -> None:
    for spec in load(S_YAML, {}).functions:
        for handler in filter(None, (spec.handler, spec.initializer)):
            assert callable(resolve_handler(REPO, handler)), handler


def test_interpolation() -> None:
    env = {"A": "1", "EMPTY": ""}
    variables = {"region": "${env(R, cn-hangzhou)}", "n": 3}
    assert interpolate("${env(A)}-${env('B', 'dflt')}-${env(MISSING)}-${env(EMPTY, e)}", env, variables) == "1-dflt--e"
    assert interpolate("${vars.region}", env, variables) == "cn-hangzhou"
    assert interpolate("${vars.n}", env, variables) == 3
    with pytest.raises(SYamlError):
        interpolate("${file(./x)}", env, variables)
