"""barrage render: deterministic, drift caught, unknown classes refused, requirements agree."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner

from functions.declaration import DEPLOYMENT, EciPlacement, FcRuntime, Function, KafkaSourceApiVersion, KafkaTrigger
from local.cli import main
from local.render import HEADER, RenderError, render_fc, render_files, render_knative

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10: the same parser, as a package
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("workload_class", ["fc", "knative"])
def test_render_is_deterministic_with_a_header(workload_class: str) -> None:
    first, second = render_files(workload_class), render_files(workload_class)
    assert first == second
    for text in first.values():
        assert text.startswith(HEADER)
        assert "&id" not in text and "*id" not in text  # no YAML aliases


@pytest.mark.parametrize(("workload_class", "output"), [("fc", "s.yaml"), ("knative", "knative")])
def test_checked_in_files_are_the_rendered_ones(tmp_path: Path, workload_class: str, output: str) -> None:
    target = tmp_path / output
    result = CliRunner().invoke(main, ["render", "--workload-class", workload_class, "--output", str(target)])
    assert result.exit_code == 0, result.output
    rendered = sorted(tmp_path.glob("s*.yaml")) if workload_class == "fc" else sorted(target.iterdir())
    assert rendered if workload_class == "knative" else [p.name for p in rendered] == ["s.public.yaml", "s.yaml"]
    for path in rendered:
        checked_in = REPO / path.name if workload_class == "fc" else REPO / output / path.name
        assert checked_in.read_bytes() == path.read_bytes(), (
            f"{checked_in.relative_to(REPO)} drifted: run `barrage render --workload-class {workload_class}`")


@pytest.mark.parametrize(("workload_class", "output", "victim"),
                         [("fc", "s.yaml", None), ("knative", "knative", "kafkasource.yaml")])
def test_check_catches_drift(tmp_path: Path, workload_class: str, output: str, victim: str | None) -> None:
    target = tmp_path / output
    runner = CliRunner()
    assert runner.invoke(main, ["render", "--workload-class", workload_class, "--output", str(target)]).exit_code == 0
    check = ["render", "--workload-class", workload_class, "--output", str(target), "--check"]
    assert runner.invoke(main, check).exit_code == 0
    edited = target if victim is None else target / victim
    edited.write_text(edited.read_text().replace("barrage", "barrage2", 1))
    result = runner.invoke(main, check)
    assert result.exit_code == 1
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "1 file(s) differ" in lines[0] and str(edited) in lines[0]
    # --check writes nothing; a plain render repairs.
    assert "barrage2" in edited.read_text()
    assert runner.invoke(main, check[:-1]).exit_code == 0
    assert runner.invoke(main, check).exit_code == 0


def test_check_on_the_repository_itself() -> None:
    for workload_class in ("fc", "knative"):
        result = CliRunner().invoke(main, ["render", "--workload-class", workload_class, "--check"])
        assert result.exit_code == 0, result.output


def test_missing_file_counts_as_drift(tmp_path: Path) -> None:
    shutil.copytree(REPO / "knative", tmp_path / "k")
    (tmp_path / "k" / "barrage-process.yaml").unlink()
    result = CliRunner().invoke(main, ["render", "--workload-class", "knative", "--output", str(tmp_path / "k"),
                                       "--check"])
    assert result.exit_code == 1 and "barrage-process.yaml" in result.output


@pytest.mark.parametrize("value", ["lambda", "FC ", ""])
def test_unknown_workload_class_is_refused(value: str) -> None:
    result = CliRunner().invoke(main, ["render", "--workload-class", value])
    assert result.exit_code == 2
    assert "Invalid value for '--workload-class'" in result.output and "'fc', 'knative'" in result.output


def test_declaration_reaches_both_packagings() -> None:
    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    s_yaml, knative = render_fc()["s.yaml"], render_knative()
    assert f"functionName: {processor.fc_name}" in s_yaml
    assert f"containerConcurrency: {processor.scaling.concurrency}" in knative[f"{processor.service}.yaml"]
    assert f"name: {processor.service}" in knative["kafkasource.yaml"]
    assert set(knative) == {"barrage-dead-letter.yaml", "barrage-homepage.yaml", "barrage-process.yaml",
                            "kafkasource.yaml", "kustomization.yaml"}


def test_fc_limits_are_enforced() -> None:
    from dataclasses import replace

    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    assert isinstance(processor.trigger, KafkaTrigger)
    linear = replace(processor, trigger=replace(processor.trigger, backoff="linear", retries=5))
    with pytest.raises(RenderError, match="at most 3"):
        render_fc(replace(DEPLOYMENT, functions=(linear,)))


def _fc_props(files: dict[str, str], file: str, key: str) -> dict[str, Any]:
    props: dict[str, Any] = yaml.safe_load(files[file].split("\n", 1)[1])["resources"][key]["props"]
    return props


@pytest.mark.parametrize("runtime", ["python3.10", "custom.debian10", "custom-container"])
def test_each_fc_runtime_renders_what_fc3_expects(runtime: FcRuntime) -> None:
    from dataclasses import replace

    homepage = next(f for f in DEPLOYMENT.functions if f.key == "homepage")
    deployment = replace(DEPLOYMENT, functions=tuple(replace(f, fc_runtime=runtime) if f is homepage else f
                                                     for f in DEPLOYMENT.functions))
    props = _fc_props(render_fc(deployment), "s.yaml", "homepage")
    env = props["environmentVariables"]
    assert props["runtime"] == runtime
    if runtime == "python3.10":
        # One request per instance and a whole answer: no instanceConcurrency, the page polls.
        assert "instanceConcurrency" not in props and env["FUNCTIONS_STREAMING"] == "off"
        assert props["handler"] == homepage.handler and env["CONTAINER_CONCURRENCY"] == "1"
    else:
        assert props["instanceConcurrency"] == homepage.scaling.concurrency and "BARRAGE_MAX_STREAMS" not in env
        assert (env["FUNCTIONS_APP"], env["FUNCTION_TARGET"]) == ("functions.barrage_app", "homepage")
    if runtime == "custom.debian10":
        assert props["customRuntimeConfig"] == {"port": 9000} and props["code"] == "${vars.code}"
    if runtime == "custom-container":
        assert "code" not in props and env["WORKLOAD_CLASS"] == "fc"
        assert props["customContainerConfig"]["image"] == f"{DEPLOYMENT.image}:{DEPLOYMENT.image_tag}"


def test_fc_dead_letter_queue_only_when_declared() -> None:
    from dataclasses import replace

    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    assert isinstance(processor.trigger, KafkaTrigger)
    run = _fc_props(render_fc(), "s.yaml", "processor")["triggers"][0]["triggerConfig"]["runOptions"]
    assert run["errorsTolerance"] == "NONE" and "deadLetterQueue" not in run
    with_dlq = replace(processor, trigger=replace(processor.trigger, fc_dead_letter_queue=True))
    files = render_fc(replace(DEPLOYMENT, functions=(with_dlq,), domain_function="processor"))
    run = _fc_props(files, "s.yaml", "processor")["triggers"][0]["triggerConfig"]["runOptions"]
    assert run["errorsTolerance"] == "ALL" and run["deadLetterQueue"] == {"Arn": "${env('BARRAGE_DLQ_ARN')}"}


def test_fc_env_arguments_are_quoted_and_optional_values_have_string_defaults() -> None:
    for file, text in render_fc().items():
        calls = re.findall(r"\$\{env\(([^)]*)\)\}", text)
        assert calls, file
        for call in calls:
            assert re.fullmatch(r"'[A-Z0-9_]+'(, '[^']*')?", call), f"{file}: env({call})"


def _name(requirement: str) -> str:
    return re.split(r"[<>=!~\[ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_runtime_requirements_match_pyproject() -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    lines = [line.strip() for line in (REPO / "requirements" / "runtime.txt").read_text().splitlines()]
    runtime = [line for line in lines if line and not line.startswith("#")]
    pinned = {_name(r): r.replace(" ", "") for r in project}
    for requirement in runtime:
        assert _name(requirement) in pinned, f"{requirement} is not a [project] dependency"
        assert requirement.replace(" ", "") == pinned[_name(requirement)], f"{requirement} != pyproject"
    # Left out on purpose (local tooling only); anything else missing is a mistake.
    assert set(pinned) - {_name(r) for r in runtime} == {"aliyun-fc2", "pyyaml"}


def _processor_with(**changes: object) -> Function:
    from dataclasses import replace

    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    return replace(processor, **changes)  # type: ignore[arg-type]


def _template(function: Function) -> dict[str, Any]:
    from dataclasses import replace

    rendered = render_knative(replace(DEPLOYMENT, functions=(function,)))[f"{function.service}.yaml"]
    template: dict[str, Any] = yaml.safe_load(rendered.removeprefix(HEADER))["spec"]["template"]["metadata"]
    return template


def test_processor_on_eci_carries_the_eci_label_and_the_homepage_on_fc_does_not() -> None:
    files = render_knative()
    processor = yaml.safe_load(files["barrage-process.yaml"])["spec"]["template"]["metadata"]
    homepage = yaml.safe_load(files["barrage-homepage.yaml"])["spec"]["template"]["metadata"]
    assert processor["labels"]["alibabacloud.com/eci"] == "true"  # ACK schedules only labelled pods on ECI
    assert "alibabacloud.com/eci" not in homepage["labels"]
    assert not any(key.startswith("k8s.aliyun.com/") for key in processor["annotations"])  # none declared


def test_declared_eci_specs_and_image_cache_are_rendered() -> None:
    eci = EciPlacement(use_specs=("2-4Gi", "ecs.c6.large"), image_cache_id="imc-2ze5tm5gehgtiiga2y9a",
                       auto_image_cache=False)
    template = _template(_processor_with(eci=eci))
    assert template["annotations"]["k8s.aliyun.com/eci-use-specs"] == "2-4Gi,ecs.c6.large"
    assert template["annotations"]["k8s.aliyun.com/eci-imc-id"] == "imc-2ze5tm5gehgtiiga2y9a"
    assert template["annotations"]["k8s.aliyun.com/eci-auto-imc"] == "false"
    assert "k8s.aliyun.com/eci-image-snapshot-id" not in template["annotations"]  # the legacy name
    assert "alibabacloud.com/eci" not in _template(_processor_with(eci=EciPlacement(label=False)))["labels"]


@pytest.mark.parametrize("spec", ["2c4g", "2-4G", "ecs.c6", ""])
def test_an_eci_spec_that_is_no_size_is_refused(spec: str) -> None:
    with pytest.raises(RenderError, match="use_specs"):
        _template(_processor_with(eci=EciPlacement(use_specs=(spec,))))


@pytest.mark.parametrize("version", ["sources.knative.dev/v1", "sources.knative.dev/v1beta1"])
def test_kafkasource_api_version_comes_from_the_declaration(version: KafkaSourceApiVersion) -> None:
    from dataclasses import replace

    processor = _processor_with()
    assert isinstance(processor.trigger, KafkaTrigger)
    declared = replace(processor, trigger=replace(processor.trigger, knative_api_version=version))
    source = yaml.safe_load(render_knative(replace(DEPLOYMENT, functions=(declared,)))["kafkasource.yaml"])
    assert source["apiVersion"] == version
    assert yaml.safe_load(render_knative()["kafkasource.yaml"])["apiVersion"] == "sources.knative.dev/v1"
