"""barrage render: deterministic, drift caught, unknown classes refused, requirements agree."""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from functions.declaration import DEPLOYMENT, KafkaTrigger
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
    rendered = [target] if target.is_file() else sorted(target.iterdir())
    assert rendered
    for path in rendered:
        checked_in = REPO / output if workload_class == "fc" else REPO / output / path.name
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
    assert f"instanceConcurrency: {processor.scaling.concurrency}" in s_yaml
    assert f"containerConcurrency: {processor.scaling.concurrency}" in knative[f"{processor.service}.yaml"]
    assert f"name: {processor.service}" in knative["kafkasource.yaml"]
    assert set(knative) == {"barrage-dead-letter.yaml", "barrage-homepage.yaml", "barrage-process.yaml",
                            "kafkasource.yaml", "kustomization.yaml"}


def test_the_fc_homepage_does_not_stream_and_knative_does() -> None:
    import yaml

    resources = yaml.safe_load(render_fc()["s.yaml"])["resources"]
    homepage_env = resources["homepage"]["props"]["environmentVariables"]
    assert homepage_env["BARRAGE_MAX_STREAMS"] == "0"  # FC's built-in runtime returns whole answers
    assert "BARRAGE_MAX_STREAMS" not in render_knative()["barrage-homepage.yaml"]


def test_fc_limits_are_enforced() -> None:
    from dataclasses import replace

    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    assert isinstance(processor.trigger, KafkaTrigger)
    linear = replace(processor, trigger=replace(processor.trigger, backoff="linear", retries=5))
    with pytest.raises(RenderError, match="at most 3"):
        render_fc(replace(DEPLOYMENT, functions=(linear,)))


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
