from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from local.kafkasource.manifest import Delivery, ManifestError, load_manifest, parse_duration, parse_manifest

MANIFEST = Path(__file__).resolve().parents[3] / "knative" / "kafkasource.yaml"


def test_checked_in_manifest() -> None:
    spec = load_manifest(MANIFEST)
    assert spec.topics == ("barrage-info",)
    assert spec.consumer_group == "barrage-process"
    assert spec.ordering == "unordered" and spec.initial_offset == "earliest"
    assert spec.sink.ref_name == "barrage-process"
    assert spec.delivery.retry == 10 and spec.delivery.backoff_delay_s == pytest.approx(0.3)
    assert spec.delivery.dead_letter is not None
    assert (
        spec.source_attribute("barrage-info") == "/apis/v1/namespaces/default/kafkasources/barrage-source#barrage-info"
    )
    assert spec.sink.resolve({"barrage-process": "http://127.0.0.1:8081/"}) == "http://127.0.0.1:8081/"
    with pytest.raises(ManifestError, match="no local URL"):
        spec.sink.resolve({})


@pytest.mark.parametrize(
    ("text", "seconds"), [("PT0.3S", 0.3), ("PT10S", 10), ("PT1M", 60), ("PT1H30M", 5400), ("P1D", 86400)]
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text, "f") == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "P", "PT", "10s", "PTS", "0.3"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ManifestError):
        parse_duration(text, "spec.delivery.backoffDelay")


def test_defaults_when_delivery_is_omitted() -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    del document["spec"]["delivery"]
    del document["spec"]["ordering"]
    del document["spec"]["initialOffset"]
    spec = parse_manifest(document)
    assert spec.delivery == Delivery()
    assert (spec.ordering, spec.initial_offset) == ("ordered", "latest")


def test_delivery_without_retry_means_no_retries() -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    document["spec"]["delivery"] = {"deadLetterSink": {"uri": "http://127.0.0.1:9/"}}
    delivery = parse_manifest(document).delivery
    assert delivery.retry == 0 and delivery.dead_letter is not None
    assert (delivery.backoff_policy, delivery.backoff_delay_s, delivery.timeout_s) == ("exponential", 0.3, 600.0)


def test_delivery_naming_neither_sink_retry_nor_timeout_counts_as_absent() -> None:
    # EKB's control plane builds no egress config for it, so the data plane's defaults apply.
    document = yaml.safe_load(MANIFEST.read_text())
    document["spec"]["delivery"] = {"backoffPolicy": "linear", "backoffDelay": "PT5S"}
    assert parse_manifest(document).delivery == Delivery()


@pytest.mark.parametrize("version", ["sources.knative.dev/v1", "sources.knative.dev/v1beta1"])
def test_both_served_api_versions_are_read(version: str) -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    document["apiVersion"] = version
    assert parse_manifest(document).api_version == version


def test_key_type_comes_from_the_label() -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    assert parse_manifest(document).key_type == "string"
    document["metadata"].setdefault("labels", {})["kafkasources.sources.knative.dev/key-type"] = "int"
    spec = parse_manifest(document)
    assert spec.key_type == "int" and spec.context().key_type == "int"
    assert spec.context("float").key_type == "float"  # the CLI's --key-type overrides it


def test_backoff_policies() -> None:
    assert Delivery(backoff_policy="linear", backoff_delay_s=0.5).backoff(3) == pytest.approx(1.5)
    assert Delivery(backoff_policy="exponential", backoff_delay_s=0.5).backoff(3) == pytest.approx(4.0)


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (("spec", "ordering"), "random", "spec.ordering"),
        (("spec", "initialOffset"), "middle", "spec.initialOffset"),
        (("spec", "topics"), [], "spec.topics"),
        (("spec", "consumers"), 0, "spec.consumers"),
        (("spec", "delivery", "retry"), -1, "spec.delivery.retry"),
        (("spec", "delivery", "backoffPolicy"), "fibonacci", "backoffPolicy"),
        (("spec", "delivery", "backoffDelay"), "soon", "backoffDelay"),
        (("spec", "sink"), {"ref": {}}, "spec.sink.ref"),
        (("kind",), "Service", "kind"),
        (("apiVersion",), "sources.knative.dev/v2", "apiVersion"),
        (("metadata", "labels"), {"kafkasources.sources.knative.dev/key-type": "long"}, "key-type"),
        (("spec", "delivery"), "often", "spec.delivery"),
    ],
)
def test_bad_manifests_name_the_field(path: tuple[str, ...], value: object, message: str) -> None:
    document = yaml.safe_load(MANIFEST.read_text())
    target = document
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    with pytest.raises(ManifestError, match=message):
        parse_manifest(document)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError):
        load_manifest(tmp_path / "missing.yaml")
    (tmp_path / "other.yaml").write_text("kind: Service\n")
    with pytest.raises(ManifestError, match="no KafkaSource"):
        load_manifest(tmp_path / "other.yaml")
