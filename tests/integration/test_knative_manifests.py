"""knative/: every manifest valid against its CRD schema, plus what the schemas leave open;
and what ``kubectl kustomize knative/`` makes of the directory, checked the same way."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import yaml

from functions.barrage_deploy import DEPLOYMENT
from functions.declaration import KafkaSourceApiVersion, KafkaTrigger
from local.kafkasource.manifest import load_manifest, parse_manifest
from local.render import render_knative
from tests.schemas import schemas_dir

jsonschema: Any = pytest.importorskip("jsonschema")  # a dev dependency without type stubs

REPO = Path(__file__).resolve().parents[2]
KNATIVE = REPO / "knative"
CRDS = {"Service": "knative-serving-service.crd.yaml", "KafkaSource": "knative-kafkasource.crd.yaml"}
SECRET_NAME = re.compile(r"KEY|SECRET|PWD|PASSWORD|TOKEN", re.IGNORECASE)
# Kubernetes' ObjectMeta: the CRD schemas only say "type: object" for the top-level metadata.
OBJECT_META = {"name", "namespace", "labels", "annotations"}


def crd_schema(api_version: str, kind: str) -> dict[str, Any]:
    """The schema the CRD serves for ``api_version``; the test fails when it serves no such version."""
    path = schemas_dir() / CRDS[kind]
    if not path.is_file():
        pytest.fail(f"{path} is missing: the schemas live in ../shared/schemas beside the repository")
    crd = yaml.safe_load(path.read_text(encoding="utf-8"))
    group, _, version = api_version.partition("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind, f"{path} is not {kind}.{group}"
    served = {v["name"]: v for v in crd["spec"]["versions"] if v.get("served")}
    assert version in served, f"{kind} {api_version}: the CRD serves only {', '.join(sorted(served))}"
    schema: dict[str, Any] = served[version]["schema"]["openAPIV3Schema"]
    return schema


def documents() -> Iterator[tuple[str, dict[str, Any]]]:
    kustomization = yaml.safe_load((KNATIVE / "kustomization.yaml").read_text(encoding="utf-8"))
    for name in kustomization["resources"]:
        for document in yaml.safe_load_all((KNATIVE / name).read_text(encoding="utf-8")):
            yield name, document


def by_kind(kind: str) -> list[dict[str, Any]]:
    return [d for _, d in documents() if d["kind"] == kind]


def unknown_fields(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Fields the schema does not name, where it does not let unknown fields through."""
    found = []
    if isinstance(value, dict) and "properties" in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for key, item in value.items():
            if key in schema["properties"]:
                found += unknown_fields(item, schema["properties"][key], f"{path}.{key}")
            elif not isinstance(schema.get("additionalProperties"), dict):
                found.append(f"{path}.{key}")
    elif isinstance(value, dict) and isinstance(schema.get("additionalProperties"), dict):
        for key, item in value.items():
            found += unknown_fields(item, schema["additionalProperties"], f"{path}.{key}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            found += unknown_fields(item, schema["items"], f"{path}[{index}]")
    return found


def test_kustomization_lists_every_rendered_manifest() -> None:
    listed = set(yaml.safe_load((KNATIVE / "kustomization.yaml").read_text())["resources"])
    on_disk = {p.name for p in KNATIVE.glob("*.yaml")} - {"kustomization.yaml", "secret.example.yaml"}
    assert listed == on_disk
    assert "secret.example.yaml" not in listed  # placeholders are never applied by `kubectl apply -k`


@pytest.mark.parametrize(("name", "document"), list(documents()), ids=lambda v: v if isinstance(v, str) else "")
def test_valid_against_the_crd_and_no_unknown_fields(name: str, document: dict[str, Any]) -> None:
    schema = crd_schema(document["apiVersion"], document["kind"])
    jsonschema.validate(document, schema)
    assert unknown_fields(document, schema) == []
    assert set(document["metadata"]) <= OBJECT_META, f"{name}: unexpected metadata fields"


def test_schema_checks_can_fail() -> None:
    service = by_kind("Service")[0]
    schema = crd_schema("serving.knative.dev/v1", "Service")
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["template"]["spec"]["containerConcurrency"] = "two"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)
    broken = yaml.safe_load(yaml.safe_dump(service))
    broken["spec"]["template"]["spec"]["containers"][0]["imagePullSecret"] = "typo"
    assert unknown_fields(broken, schema) == [".spec.template.spec.containers[0].imagePullSecret"]


def string_fields(document: dict[str, Any]) -> Iterator[tuple[str, Any]]:
    yield from (document["metadata"].get("annotations") or {}).items()
    template = document.get("spec", {}).get("template", {}).get("metadata", {})
    yield from (template.get("annotations") or {}).items()
    yield from (template.get("labels") or {}).items()
    yield from (document["metadata"].get("labels") or {}).items()


def test_annotation_and_label_values_are_strings() -> None:
    for name, document in documents():
        for key, value in string_fields(document):
            assert isinstance(value, str), f"{name}: {key} is {value!r}, not a string"


def containers(document: dict[str, Any]) -> list[dict[str, Any]]:
    return list(document["spec"]["template"]["spec"]["containers"])


def test_no_secret_literals() -> None:
    for name, document in documents():
        if document["kind"] != "Service":
            continue
        for container in containers(document):
            for env in container.get("env", []):
                if SECRET_NAME.search(env["name"]):
                    assert "value" not in env, f"{name}: {env['name']} is a literal"
                    assert "secretKeyRef" in env["valueFrom"], f"{name}: {env['name']} must be a secretKeyRef"
    text = "".join(p.read_text() for p in KNATIVE.glob("*.yaml"))
    assert not re.search(r"LTAI[0-9A-Za-z]{12,}", text), "an AccessKey id literal"


def test_secret_refs_name_secrets_from_the_example() -> None:
    example = {d["metadata"]["name"]: set(d.get("stringData") or d.get("data") or {})
               for d in yaml.safe_load_all((KNATIVE / "secret.example.yaml").read_text())}
    refs: list[tuple[str, str]] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for kind in ("secretKeyRef", "configMapKeyRef"):
                if kind in node:
                    refs.append((node[kind]["name"], node[kind]["key"]))
            for item in node.values():
                walk(item)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    for _, document in documents():
        walk(document)
    assert refs
    for secret, key in refs:
        assert key in example.get(secret, set()), f"{secret}/{key} is not in secret.example.yaml"


def test_kafkasource_enums_and_sinks_match_services() -> None:
    (source,) = by_kind("KafkaSource")
    spec = source["spec"]
    assert spec["ordering"] in ("ordered", "unordered")
    assert spec["initialOffset"] in ("earliest", "latest")
    assert spec["delivery"]["backoffPolicy"] in ("exponential", "linear")
    services = {d["metadata"]["name"] for d in by_kind("Service")}
    for destination in (spec["sink"], spec["delivery"]["deadLetterSink"]):
        assert destination["ref"]["kind"] == "Service" and destination["ref"]["name"] in services
    for field in ("user", "password", "type"):
        assert set(spec["net"]["sasl"][field]) == {"secretKeyRef"}
    parsed = load_manifest(KNATIVE / "kafkasource.yaml")  # what `barrage dispatch` reads
    assert parsed.sink.ref_name == "barrage-process" and parsed.delivery.dead_letter is not None


def test_processor_service_scaling_probes_and_resources() -> None:
    service = next(d for d in by_kind("Service") if d["metadata"]["name"] == "barrage-process")
    template = service["spec"]["template"]
    # What an unordered KafkaSource keeps in flight (max.poll.records): all admitted, so combined.
    assert template["spec"]["containerConcurrency"] == 50
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/min-scale"] == "0"
    assert template["metadata"]["annotations"]["autoscaling.knative.dev/max-scale"] == "100"
    (container,) = containers(service)
    env = {e["name"]: e for e in container["env"]}
    assert env["ROLE"]["value"] == "processor" and env["WORKLOAD_CLASS"]["value"] == "knative"
    for probe in ("readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["path"] == "/healthz"
    assert set(container["resources"]) == {"requests", "limits"}


def test_homepage_runs_on_the_fc_workload_class() -> None:
    service = next(d for d in by_kind("Service") if d["metadata"]["name"] == "barrage-homepage")
    assert service["metadata"]["annotations"]["workload.serving.knative.aliyun.com/class"] == "fc"
    template = service["spec"]["template"]["metadata"]["annotations"]
    assert template["fc.revision.serving.knative.aliyun.com/code-space"] == "image"
    assert template["fc.revision.serving.knative.aliyun.com/role-arm"].startswith("acs:ram::")
    assert template["fc.revision.serving.knative.aliyun.com/domain"].startswith('{"domain":')
    (container,) = containers(service)
    env = {e["name"]: e for e in container["env"]}
    assert env["WORKLOAD_CLASS"]["value"] == "fc" and env["ROLE"]["value"] == "homepage"
    assert container["ports"] == [{"name": "http1", "containerPort": 9000}]  # FC's CAPort default


def check_document(document: dict[str, Any], where: str) -> None:
    schema = crd_schema(document["apiVersion"], document["kind"])
    jsonschema.validate(document, schema)
    assert unknown_fields(document, schema) == [], where
    assert set(document["metadata"]) <= OBJECT_META, f"{where}: unexpected metadata fields"


def rendered_with_source_version(version: KafkaSourceApiVersion) -> dict[str, str]:
    processor = next(f for f in DEPLOYMENT.functions if isinstance(f.trigger, KafkaTrigger))
    assert isinstance(processor.trigger, KafkaTrigger)
    declared = replace(processor, trigger=replace(processor.trigger, knative_api_version=version))
    functions = tuple(declared if f is processor else f for f in DEPLOYMENT.functions)
    return render_knative(replace(DEPLOYMENT, functions=functions))


@pytest.mark.parametrize("version", ["sources.knative.dev/v1", "sources.knative.dev/v1beta1"])
def test_kafkasource_valid_in_the_version_the_declaration_picks(version: KafkaSourceApiVersion) -> None:
    (source,) = [d for d in yaml.safe_load_all(rendered_with_source_version(version)["kafkasource.yaml"])]
    assert source["apiVersion"] == version
    check_document(source, f"KafkaSource {version}")
    assert parse_manifest(source).api_version == version  # `barrage dispatch` reads either


def test_the_crd_does_not_serve_an_unknown_version() -> None:
    with pytest.raises(AssertionError, match="serves only v1, v1beta1"):
        crd_schema("sources.knative.dev/v1alpha1", "KafkaSource")


def kustomize(directory: Path) -> list[dict[str, Any]]:
    """``kubectl kustomize DIRECTORY``: the documents ``kubectl apply -k`` would send."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is not installed: ./dev test installs it (Debian package kubernetes-client)")
    result = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed: {result.stderr.strip()}"
    return [d for d in yaml.safe_load_all(result.stdout) if d]


def test_kubectl_kustomize_builds_valid_documents() -> None:
    built = kustomize(KNATIVE)
    assert sorted((d["kind"], d["metadata"]["name"]) for d in built) == [
        ("KafkaSource", "barrage-source"), ("Service", "barrage-dead-letter"), ("Service", "barrage-homepage"),
        ("Service", "barrage-process")]
    for document in built:
        check_document(document, f"{document['kind']} {document['metadata']['name']}")
        assert document["metadata"]["namespace"] == DEPLOYMENT.namespace
    images = {d["metadata"]["name"]: containers(d)[0]["image"] for d in built if d["kind"] == "Service"}
    assert images["barrage-process"] == images["barrage-homepage"] == f"{DEPLOYMENT.image}:{DEPLOYMENT.image_tag}"
    assert images["barrage-dead-letter"] == f"{DEPLOYMENT.dead_letter_image}:latest"
    processor = next(d for d in built if d["metadata"]["name"] == "barrage-process")
    assert processor["spec"]["template"]["metadata"]["labels"]["alibabacloud.com/eci"] == "true"


def test_kubectl_kustomize_with_a_v1beta1_kafkasource(tmp_path: Path) -> None:
    for name, text in rendered_with_source_version("sources.knative.dev/v1beta1").items():
        (tmp_path / name).write_text(text, encoding="utf-8")
    (source,) = [d for d in kustomize(tmp_path) if d["kind"] == "KafkaSource"]
    assert source["apiVersion"] == "sources.knative.dev/v1beta1"
    check_document(source, "KafkaSource v1beta1 after kustomize")


def test_kubectl_kustomize_fails_on_a_broken_kustomization(tmp_path: Path) -> None:
    shutil.copytree(KNATIVE, tmp_path / "k")
    (tmp_path / "k" / "kafkasource.yaml").unlink()
    with pytest.raises(AssertionError, match="kubectl kustomize"):
        kustomize(tmp_path / "k")
