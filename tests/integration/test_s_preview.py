"""The real Serverless Devs CLI renders s.yaml and s.public.yaml from the README's exports alone.

``s preview -t FILE -o json`` is what ``s deploy`` renders before it calls the fc3 component; each
rendered resource is validated against the official fc3 / fc3-domain schemas and FC 3.0's rules
(tests/fc3_checks.py). The CLI runs offline (tests/serverless_devs.py): a run that reaches for
the network fails.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from local.render import FC_NETWORKS, FC_PUBLIC, FC_VPC
from tests.fc3_checks import rule_problems, schema_problems
from tests.readme_deploy import deployments
from tests.serverless_devs import OfflineViolation, SPreviewError, s_preview

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
DEPLOYMENTS = {d.template.name: d for d in deployments()}


@pytest.fixture(scope="module")
def rendered() -> dict[str, dict[str, Any]]:
    return {name: s_preview(d.template, d.env) for name, d in DEPLOYMENTS.items()}


def props(document: dict[str, Any], key: str) -> dict[str, Any]:
    value: dict[str, Any] = document["resources"][key]["props"]
    return value


def test_the_readme_deploys_both_network_paths() -> None:
    assert set(DEPLOYMENTS) == {n.file for n in FC_NETWORKS}


@pytest.mark.parametrize("name", [n.file for n in FC_NETWORKS])
def test_rendered_resources_pass_the_official_schemas_and_fc3_rules(rendered: dict[str, Any], name: str) -> None:
    document = rendered[name]
    assert {k: r["component"] for k, r in document["resources"].items()} == {
        "homepage": "fc3", "processor": "fc3", "domain": "fc3-domain"}
    assert schema_problems(document) == []
    assert rule_problems(document) == []


@pytest.mark.parametrize("name", [n.file for n in FC_NETWORKS])
def test_runtimes_are_honest(rendered: dict[str, Any], name: str) -> None:
    homepage, processor = props(rendered[name], "homepage"), props(rendered[name], "processor")
    # The page streams and shares instances: a custom runtime whose bootstrap serves on port 9000.
    assert homepage["runtime"] == "custom.debian10" and homepage["customRuntimeConfig"] == {"port": 9000}
    assert homepage["instanceConcurrency"] == 20
    assert "FUNCTIONS_STREAMING" not in homepage["environmentVariables"]  # it streams: the default cap
    assert homepage["environmentVariables"]["FUNCTIONS_APP"] == "functions.barrage_app"
    # The processor on the built-in runtime: one batch per instance, so no instanceConcurrency.
    assert processor["runtime"] == "python3.10" and "instanceConcurrency" not in processor
    assert processor["handler"] == "functions.barrage_app.processor"


def test_vpc_path(rendered: dict[str, Any]) -> None:
    env = DEPLOYMENTS[FC_VPC.file].env
    expected = {"vpcId": env["BARRAGE_VPC_ID"], "vSwitchIds": [env["BARRAGE_VSWITCH_ID"]],
                "securityGroupId": env["BARRAGE_SECURITY_GROUP_ID"]}
    for key in ("homepage", "processor"):
        assert props(rendered[FC_VPC.file], key)["vpcConfig"] == expected
    homepage = props(rendered[FC_VPC.file], "homepage")["environmentVariables"]
    assert all(server.endswith(":9092") for server in homepage["KAFKA_SERVER"].split(","))
    assert (homepage["KAFKA_USER"], homepage["KAFKA_PWD"]) == ("", "")  # plaintext inside the VPC
    assert ".vpc.tablestore.aliyuncs.com" in homepage["OTS_ENDPOINT"]


def test_public_path(rendered: dict[str, Any]) -> None:
    env = DEPLOYMENTS[FC_PUBLIC.file].env
    for key in ("homepage", "processor"):
        assert "vpcConfig" not in props(rendered[FC_PUBLIC.file], key)
        assert props(rendered[FC_PUBLIC.file], key)["internetAccess"] is True
    homepage = props(rendered[FC_PUBLIC.file], "homepage")["environmentVariables"]
    assert all(server.endswith(":9093") for server in homepage["KAFKA_SERVER"].split(","))
    assert (homepage["KAFKA_USER"], homepage["KAFKA_PWD"]) == (env["KAFKA_USER"], env["KAFKA_PWD"])
    assert ".vpc." not in homepage["OTS_ENDPOINT"]


@pytest.mark.parametrize("name", [n.file for n in FC_NETWORKS])
def test_kafka_trigger_without_a_dead_letter_queue_holds_the_stream(rendered: dict[str, Any], name: str) -> None:
    (trigger,) = props(rendered[name], "processor")["triggers"]
    run = trigger["triggerConfig"]["runOptions"]
    assert run["errorsTolerance"] == "NONE" and "deadLetterQueue" not in run
    kafka = trigger["triggerConfig"]["eventSourceConfig"]["eventSourceParameters"]["sourceKafkaParameters"]
    assert kafka["InstanceId"] == DEPLOYMENTS[name].env["KAFKA_INSTANCE_ID"]
    assert kafka["RegionId"] == DEPLOYMENTS[name].env["REGION"]


def required_variables(network: Any) -> list[str]:
    vpc = ("BARRAGE_VPC_ID", "BARRAGE_VSWITCH_ID", "BARRAGE_SECURITY_GROUP_ID") if network.vpc else ()
    return sorted({*network.required, "BARRAGE_FC_ROLE_ARN", "KAFKA_INSTANCE_ID", *vpc})


@pytest.mark.parametrize("network", FC_NETWORKS, ids=[n.file for n in FC_NETWORKS])
def test_the_readme_exports_every_required_variable(network: Any) -> None:
    assert set(required_variables(network)) <= set(DEPLOYMENTS[network.file].env)


@pytest.mark.parametrize(("network", "name", "value"), [
    (FC_VPC, "OTS_ENDPOINT", None), (FC_VPC, "BARRAGE_VSWITCH_ID", ""),
    (FC_PUBLIC, "KAFKA_PWD", None), (FC_PUBLIC, "BARRAGE_FC_ROLE_ARN", ""),
], ids=["vpc-unset", "vpc-empty", "public-unset", "public-empty"])
def test_a_missing_required_variable_stops_the_cli(network: Any, name: str, value: str | None) -> None:
    # Unset, or set but empty: both are errors for the CLI (tests/integration/local/test_syaml_agrees.py
    # checks every required name against the local reader, which agrees with the CLI on these).
    env = {k: v for k, v in DEPLOYMENTS[network.file].env.items() if k != name}
    if value is not None:
        env[name] = value
    with pytest.raises(SPreviewError, match=rf"env\('{name}'\) not found"):
        s_preview(REPO / network.file, env)


def test_the_offline_guard_catches_the_cli_going_online() -> None:
    # With the CLI's default settings it starts its update-check daemon: the guard refuses it.
    with pytest.raises(OfflineViolation, match="update-cli"):
        s_preview(REPO / "s.yaml", DEPLOYMENTS["s.yaml"].env, settings_for_offline=False)


def test_a_dotenv_beside_the_template_is_refused(tmp_path: Path) -> None:
    (tmp_path / "s.yaml").write_text((REPO / "s.yaml").read_text())
    (tmp_path / ".env").write_text("OTS_ENDPOINT=x\n")
    with pytest.raises(SPreviewError, match=r"\.env exists"):
        s_preview(tmp_path / "s.yaml", {})
