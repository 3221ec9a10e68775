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
    assert spec.ordering == "ordered" and spec.initial_offset == "earliest"
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
