"""The orders example's deployment files: rendered from its declaration alone, valid where the platforms'
own tools and schemas can tell offline (kubectl kustomize, the Knative CRDs)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from examples.orders.deploy import DEPLOYMENT
from local.cli import main
from local.kafkasource.manifest import load_manifest
from tests.integration.test_knative_manifests import check_document, kustomize

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]
OUT = REPO / "examples" / "orders"


@pytest.mark.parametrize("workload_class", ["fc", "knative"])
def test_checked_in_files_are_what_the_declaration_renders(workload_class: str) -> None:
    result = CliRunner().invoke(main, ["render", "--workload-class", workload_class, "--app",
                                       "examples.orders.deploy", "--check"])
    assert result.exit_code == 0, result.output


def test_knative_manifests_build_and_validate() -> None:
    built = kustomize(OUT / "knative")
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == [
        ("KafkaSource", "orders-source"), ("Service", "orders-dead-letter"), ("Service", "orders-intake"),
        ("Service", "orders-tally")]
    for document in built:
        check_document(document, f"{document['kind']} {document['metadata']['name']}")
        assert document["metadata"]["namespace"] == DEPLOYMENT.namespace
    lines = [line for p in (OUT / "knative").glob("*.yaml") for line in p.read_text().splitlines()]
    leaked = [line for line in lines if "barrage" in line and not line.startswith("#")]  # comments name the CLI
    assert not leaked, f"barrage's names in another app's manifests: {leaked}"


def test_the_dispatcher_reads_the_rendered_kafkasource() -> None:
    spec = load_manifest(OUT / "knative" / "kafkasource.yaml")
    assert spec.topics == ("orders",) and spec.consumer_group == "orders-tally"


def test_an_app_without_a_declaration_is_one_line(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["render", "--workload-class", "fc", "--app", "examples.orders.model"])
    assert result.exit_code == 1 and "is not a functions.declaration.Deployment" in result.output


def test_the_code_package_holds_the_library_and_the_app(tmp_path: Path) -> None:
    import zipfile

    output = tmp_path / "orders-fc.zip"
    result = CliRunner().invoke(main, ["build", "--workload-class", "fc", "--app", "examples.orders.deploy",
                                       "--no-deps", "--output", str(output)])
    assert result.exit_code == 0, result.output
    names = set(zipfile.ZipFile(output).namelist())
    assert {"functions/app.py", "functions/bindings/fc_event.py", "examples/orders/app.py"} <= names
    assert not any(name.startswith("handlers/") for name in names)  # barrage's domain is not the orders app's
