"""One truth: the local FC's s.yaml reader and Serverless Devs' ``s preview`` on the same inputs.

Every form the reader accepts renders to the same value in both; every input the CLI refuses the
reader refuses too, with the same message where the reader mirrors it. Where the CLI renders
something surprising (an unquoted name beside a quoted default is read as undefined, so the
variable is ignored; a number default keeps its type), the reader refuses: those cases are
listed with what the CLI does, so a change in the CLI shows up here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from local.fc.syaml import SYamlError, load
from local.render import FC_NETWORKS
from tests.fc3_checks import schema_problems
from tests.readme_deploy import deployments
from tests.serverless_devs import SPreviewError, s_preview

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]


def template(tmp_path: Path, props: dict[str, Any], name: str = "s.yaml", component: str = "probe") -> Path:
    # A component s preview never loads (nothing is fetched for a preview), read as data by both.
    document = {
        "edition": "3.0.0", "name": "agree",
        "vars": {"x": 3, "y": {"a": "q"}, "region": "${env('AGREE_REGION', 'cn-hangzhou')}"},
        "resources": {
            "probe": {"component": component, "props": props},
            "other": {"component": "probe", "props": {"functionName": "other-fn", "region": "${vars.region}"}},
        },
    }
    directory = tmp_path / name.replace(".", "-")
    directory.mkdir()
    path = directory / "s.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return path


ACCEPTED: list[tuple[str, Any, dict[str, str], Any]] = [
    # (prop, value in s.yaml, environment, rendered value)
    ("quoted", "${env('S1')}", {"S1": "v1"}, "v1"),
    ("double_quoted", '${env("S2")}', {"S2": "v2"}, "v2"),
    ("default_unset", "${env('S3', 'd3')}", {}, "d3"),
    ("default_empty", "${env('S4', 'd4')}", {"S4": ""}, "d4"),
    ("empty_default", "${env('S5', '')}", {}, ""),
    ("spaces", "${env( 'S6' , 'd6' )}", {}, "d6"),
    ("double_default", "${env('S7', \"dd\")}", {}, "dd"),
    ("unquoted_single_name", "${env(S8)}", {"S8": "v8"}, "v8"),
    ("blank_is_a_value", "${env('S9')}", {"S9": " "}, " "),
    ("text_around", "x-${env('S10', 'd')}-${vars.x}", {}, "x-d-3"),
    ("var_keeps_its_type", "${vars.x}", {}, 3),
    ("nested_var", "${vars.y.a}", {}, "q"),
    ("var_with_env", "${vars.region}", {"AGREE_REGION": "cn-beijing"}, "cn-beijing"),
    ("list", ["${env('S11', 'a')}", "b"], {}, ["a", "b"]),
    ("other_resource", "${resources.other.props.functionName}", {}, "other-fn"),
    ("environment", {"A": "${env('S12', '1')}", "B": "plain"}, {}, {"A": "1", "B": "plain"}),
]


def test_accepted_forms_render_alike(tmp_path: Path) -> None:
    props = {name: value for name, value, _, _ in ACCEPTED}
    env: dict[str, str] = {}
    for _, _, case_env, _ in ACCEPTED:
        env.update(case_env)
    path = template(tmp_path, props)
    cli = s_preview(path, env)["resources"]["probe"]["props"]
    reader = load(path, env).resources["probe"]["props"]
    assert reader == cli
    assert cli == {name: expected for name, _, _, expected in ACCEPTED}


REFUSED_BY_BOTH: list[tuple[str, Any, dict[str, str], str | None]] = [
    # (case, value, environment, the message both give; None: each words it its own way)
    ("required_unset", "${env('E1')}", {}, "env('E1') not found"),
    ("required_empty", "${env('E2')}", {"E2": ""}, "env('E2') not found"),
    ("unquoted_with_default", "${env(E3, d)}", {"E3": "set"}, "env('E3, d') not found"),
    ("unknown_var", "${vars.nope}", {}, "${vars.nope} not found"),
    ("spaces_around_var", "${ vars.x }", {}, None),
    ("null_default", "${env('E4', null)}", {}, None),
]


@pytest.mark.parametrize(("case", "value", "env", "message"), REFUSED_BY_BOTH, ids=[c[0] for c in REFUSED_BY_BOTH])
def test_refused_by_both(tmp_path: Path, case: str, value: Any, env: dict[str, str], message: str | None) -> None:
    path = template(tmp_path, {"v": value})
    with pytest.raises(SPreviewError) as cli:
        s_preview(path, env)
    with pytest.raises(SYamlError) as reader:
        load(path, env)
    if message is not None:
        assert message in str(cli.value) and str(reader.value) == message


REFUSED_BY_THE_READER: list[tuple[str, Any, dict[str, str], Any]] = [
    # (case, value, environment, what the CLI renders instead)
    ("unquoted_name_quoted_default", "${env(E5, 'd')}", {"E5": "ignored"}, "d"),  # E5 is never read
    ("number_default", "${env('E6', 12)}", {}, 12),  # but "12" once E6 is set
    ("expression_default", "${env('E7', 'a' + 'b')}", {}, "ab"),
]


def test_what_the_cli_renders_surprisingly_the_reader_refuses(tmp_path: Path) -> None:
    env = {k: v for _, _, case_env, _ in REFUSED_BY_THE_READER for k, v in case_env.items()}
    path = template(tmp_path, {case: value for case, value, _, _ in REFUSED_BY_THE_READER})
    rendered = s_preview(path, env)["resources"]["probe"]["props"]
    assert rendered == {case: cli_value for case, _, _, cli_value in REFUSED_BY_THE_READER}
    for case, value, case_env, _ in REFUSED_BY_THE_READER:
        with pytest.raises(SYamlError):
            load(template(tmp_path, {"v": value}, name=case), case_env)


def test_a_number_in_the_environment_fails_the_schema_and_the_reader(tmp_path: Path) -> None:
    props = {"region": "cn-hangzhou", "functionName": "f", "runtime": "python3.10", "code": "./c", "handler": "m.h",
             "environmentVariables": {"N": "${env('NUMBER', '12')}", "M": 12}}
    path = template(tmp_path, props, component="fc3")
    rendered = s_preview(path, {})
    assert any("environmentVariables.M" in p for p in schema_problems(rendered))
    with pytest.raises(SYamlError, match=r"environmentVariables\.M: 12 is not a string"):
        load(path, {})


DEPLOYMENTS = {d.template.name: d for d in deployments()}


@pytest.mark.parametrize("name", [n.file for n in FC_NETWORKS])
def test_the_deploy_files_read_alike_with_the_readme_exports(name: str) -> None:
    deployment = DEPLOYMENTS[name]
    cli = s_preview(deployment.template, deployment.env)
    reader = load(deployment.template, deployment.env)
    assert reader.resources == cli["resources"]
    assert reader.variables == cli["vars"]


@pytest.mark.parametrize("name", [n.file for n in FC_NETWORKS])
def test_the_reader_requires_what_the_cli_requires(name: str) -> None:
    # Every ${env('NAME')} without a default: the reader refuses its absence as the CLI does
    # (tests/integration/test_s_preview.py shows the CLI on a sample of them).
    deployment = DEPLOYMENTS[name]
    text = deployment.template.read_text(encoding="utf-8")
    required = sorted({n for n in deployment.env if f"${{env('{n}')}}" in text})
    assert required, "the file has required variables"
    for variable in required:
        for env in ({k: v for k, v in deployment.env.items() if k != variable}, {**deployment.env, variable: ""}):
            with pytest.raises(SYamlError, match=rf"^env\('{variable}'\) not found$"):
                load(deployment.template, env)
    relaxed = load(deployment.template, {}, missing="empty")
    assert set(relaxed.defaulted) == set(required)
