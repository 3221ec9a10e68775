from __future__ import annotations

from pathlib import Path

import pytest

from functions.config import ConfigError, Settings


def test_empty_environment_selects_embedded_defaults() -> None:
    settings = Settings.from_environ({})
    assert settings.bus == "memory"
    assert settings.kafka is None and settings.tablestore is None
    assert settings.sqlite_path == Path(".barrage/barrage.db")
    assert settings.tracing.endpoint is None
    assert (settings.tracing.parent_span, settings.tracing.sender_span) == ("barrage-sender", "sender")
    assert settings.container_concurrency == 2


def test_seed_names_are_read() -> None:
    settings = Settings.from_environ(
        {
            "KAFKA_SERVER": "b1:9093, b2:9093",
            "KAFKA_USER": "alice",
            "KAFKA_PWD": "s3cret",
            "KAFKA_TOPIC": "barrage-info",
            "OTS_ENDPOINT": "https://inst.cn-hangzhou.ots.aliyuncs.com",
            "OTS_INSTANCENAME": "inst",
            "TABLE_NAME": "barrage",
            "OTS_KEYID": "id",
            "OTS_SECRET": "key",
            "TRACING": "http://collector:9411/api/v2/spans",
            "TRACE_NAME1": "sender",
            "TRACE_NAME3": "result",
            "PARENT_SPAN": "barrage-sender",
            "SUB_SPAN": "process",
            "POD_NAME": "pod-1",
            "POD_NAMESPACE": "default",
            "ROLE": "manager",
        }
    )
    assert settings.bus == "kafka"
    assert settings.kafka is not None and settings.kafka.servers == ("b1:9093", "b2:9093")
    assert settings.kafka.user == "alice" and "s3cret" not in repr(settings.kafka)
    assert settings.tablestore is not None and settings.tablestore.access_key_id == "id"
    assert "key" not in repr(settings.tablestore).split("access_key_id")[1].split(",")[1]
    assert settings.tracing.service_name == "pod-1"
    assert settings.role == "manager" and settings.pod_namespace == "default"


def test_sts_credentials_come_before_long_lived_keys() -> None:
    settings = Settings.from_environ(
        {
            "OTS_ENDPOINT": "http://127.0.0.1:1",
            "OTS_INSTANCENAME": "i",
            "OTS_KEYID": "long",
            "OTS_SECRET": "long-secret",
            "ALIBABA_CLOUD_ACCESS_KEY_ID": "sts-id",
            "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "sts-secret",
            "ALIBABA_CLOUD_SECURITY_TOKEN": "token",
        }
    )
    assert settings.tablestore is not None
    assert (settings.tablestore.access_key_id, settings.tablestore.security_token) == ("sts-id", "token")
    assert settings.tablestore.access_key_secret == "sts-secret"


@pytest.mark.parametrize(
    ("environ", "name"),
    [
        ({"KAFKA_USER": "u"}, "KAFKA_SERVER"),
        ({"KAFKA_SERVER": "b1:9093", "KAFKA_USER": "u"}, "KAFKA_PWD"),
        ({"KAFKA_SERVER": "b1"}, "KAFKA_SERVER"),
        ({"KAFKA_SERVER": "b1:9093", "KAFKA_CA": "/no/such/ca.pem"}, "KAFKA_CA"),
        ({"BARRAGE_BUS": "kafka"}, "KAFKA_SERVER"),
        ({"BARRAGE_BUS": "carrier-pigeon"}, "BARRAGE_BUS"),
        ({"OTS_ENDPOINT": "ots.example"}, "OTS_ENDPOINT"),
        ({"OTS_ENDPOINT": "http://x"}, "OTS_INSTANCENAME"),
        ({"OTS_ENDPOINT": "http://x", "OTS_INSTANCENAME": "i", "OTS_KEYID": "k"}, "OTS_SECRET"),
        ({"OTS_ENDPOINT": "http://x", "OTS_INSTANCENAME": "i", "BARRAGE_OTS_TTL": "60"}, "BARRAGE_OTS_TTL"),
        ({"TRACING": "collector:9411"}, "TRACING"),
        ({"BARRAGE_LANES": "many"}, "BARRAGE_LANES"),
        ({"BARRAGE_LANES": "0"}, "BARRAGE_LANES"),
        ({"CONTAINER_CONCURRENCY": "-1"}, "CONTAINER_CONCURRENCY"),
    ],
)
def test_bad_settings_name_the_variable(environ: dict[str, str], name: str) -> None:
    with pytest.raises(ConfigError) as info:
        Settings.from_environ(environ)
    assert info.value.name == name
    assert str(info.value).startswith(f"{name}: ")
    assert "\n" not in str(info.value)


def test_blank_values_count_as_unset() -> None:
    assert Settings.from_environ({"KAFKA_SERVER": "  ", "OTS_ENDPOINT": ""}).bus == "memory"


def test_masked_words_and_limits() -> None:
    settings = Settings.from_environ({"BARRAGE_MASKED_WORDS": "spam, scam ,", "BARRAGE_USER_BATCH_LIMIT": "5"})
    assert settings.masked_words == ("spam", "scam")
    assert settings.max_per_user_per_batch == 5
