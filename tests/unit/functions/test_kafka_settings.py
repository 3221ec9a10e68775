"""KafkaSettings -> librdkafka configuration (pure, no broker)."""

from __future__ import annotations

import pytest

from functions.kafka import KafkaSettings, client_config, consumer_config, producer_config


def test_plaintext_without_credentials() -> None:
    config = client_config(KafkaSettings(servers=("10.0.0.1:9092", "10.0.0.2:9092")))
    assert config["bootstrap.servers"] == "10.0.0.1:9092,10.0.0.2:9092"
    assert config["security.protocol"] == "PLAINTEXT"
    assert not any(key.startswith(("sasl.", "ssl.")) for key in config)


def test_servers_are_trimmed_and_empty_entries_dropped() -> None:
    config = client_config(KafkaSettings(servers=(" a:9092", "", "b:9092 ")))
    assert config["bootstrap.servers"] == "a:9092,b:9092"


def test_credentials_select_sasl_ssl_plain_with_ca() -> None:
    settings = KafkaSettings(
        servers=("alikafka-pre-cn-xxx-1.alikafka.aliyuncs.com:9093",),
        user="alice",
        password="s3cret",
        ca_file="/etc/kafka/only-4096-ca-cert",
    )
    config = client_config(settings)
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanisms"] == "PLAIN"
    assert config["sasl.username"] == "alice"
    assert config["sasl.password"] == "s3cret"
    assert config["ssl.ca.location"] == "/etc/kafka/only-4096-ca-cert"
    assert config["ssl.endpoint.identification.algorithm"] == "https"


def test_sasl_without_ca_file_probes_system_store() -> None:
    config = client_config(KafkaSettings(servers=("h:9093",), user="u", password="p"))
    assert config["ssl.ca.location"] == "probe"


def test_hostname_verification_can_be_turned_off() -> None:
    config = client_config(KafkaSettings(servers=("h:9093",), user="u", password="p", verify_hostname=False))
    assert config["ssl.endpoint.identification.algorithm"] == "none"


@pytest.mark.parametrize(
    ("user", "password", "missing"),
    [("u", None, "KAFKA_PWD"), ("u", "", "KAFKA_PWD"), (None, "p", "KAFKA_USER"), ("", "p", "KAFKA_USER")],
)
def test_incomplete_sasl_is_a_clear_error(user: str | None, password: str | None, missing: str) -> None:
    with pytest.raises(ValueError, match=missing):
        client_config(KafkaSettings(servers=("h:9093",), user=user, password=password))


def test_empty_strings_mean_not_configured() -> None:
    config = client_config(KafkaSettings(servers=("h:9092",), user="", password="", ca_file=""))
    assert config["security.protocol"] == "PLAINTEXT"


def test_ca_file_without_credentials_is_an_error() -> None:
    with pytest.raises(ValueError, match="KAFKA_CA"):
        client_config(KafkaSettings(servers=("h:9093",), ca_file="/ca.pem"))


def test_no_servers_is_an_error() -> None:
    with pytest.raises(ValueError, match="KAFKA_SERVER"):
        client_config(KafkaSettings(servers=()))
    with pytest.raises(ValueError, match="KAFKA_SERVER"):
        client_config(KafkaSettings(servers=(" ",)))


def test_producer_is_idempotent_acks_all_and_expires_within_timeout() -> None:
    config = producer_config(KafkaSettings(servers=("h:9092",), publish_timeout_s=5))
    assert config["acks"] == "all"
    assert config["enable.idempotence"] is True
    timeout_ms = config["message.timeout.ms"]
    assert isinstance(timeout_ms, int)
    assert 0 < timeout_ms <= 5000
    assert config["security.protocol"] == "PLAINTEXT"


def test_producer_keeps_sasl_settings() -> None:
    config = producer_config(KafkaSettings(servers=("h:9093",), user="u", password="p"))
    assert config["security.protocol"] == "SASL_SSL"
    assert config["acks"] == "all"


def test_producer_rejects_non_positive_timeout() -> None:
    with pytest.raises(ValueError, match="publish_timeout_s"):
        producer_config(KafkaSettings(servers=("h:9092",), publish_timeout_s=0))


def test_consumer_commits_manually_with_fast_group_timings() -> None:
    config = consumer_config(KafkaSettings(servers=("h:9092",)), "processor", "earliest")
    assert config["group.id"] == "processor"
    assert config["enable.auto.commit"] is False
    assert config["enable.auto.offset.store"] is False
    assert config["auto.offset.reset"] == "earliest"
    assert config["session.timeout.ms"] == 6000
    fetch_wait = config["fetch.wait.max.ms"]
    assert isinstance(fetch_wait, int)
    assert fetch_wait <= 100


def test_consumer_defaults_to_latest_like_kafkasource() -> None:
    assert consumer_config(KafkaSettings(servers=("h:9092",)), "g")["auto.offset.reset"] == "latest"


def test_consumer_rejects_unknown_initial_offset_and_empty_group() -> None:
    with pytest.raises(ValueError, match="earliest or latest"):
        consumer_config(KafkaSettings(servers=("h:9092",)), "g", "oldest")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="group"):
        consumer_config(KafkaSettings(servers=("h:9092",)), "")


def test_settings_are_frozen() -> None:
    settings = KafkaSettings(servers=("h:9092",))
    with pytest.raises(AttributeError):
        settings.topic = "other"  # type: ignore[misc]
    assert settings.topic == ""  # no default topic in the library: the app names its own
