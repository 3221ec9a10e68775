"""A functions-framework test client for the targets of functions/main.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

import functions.main
from functions.main import FUNCTIONS_SOURCE_FILE

ClientFactory = Callable[..., FlaskClient]


@pytest.fixture
def ff_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ClientFactory]:
    """``ff_client(target, **env)``: functions-framework's own app for ``target``, on a fresh SQLite file.

    The functions-framework boundary reads os.environ, as it does when deployed; Kafka and
    Tablestore are unset so the embedded defaults serve.
    """
    import functions_framework

    def make(target: str, **environ: str) -> FlaskClient:
        monkeypatch.setenv("BARRAGE_DB", str(tmp_path / "barrage.db"))
        monkeypatch.delenv("KAFKA_SERVER", raising=False)
        monkeypatch.delenv("OTS_ENDPOINT", raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        functions.main.reset()
        app = functions_framework.create_app(target=target, source=str(FUNCTIONS_SOURCE_FILE))
        client: FlaskClient = app.test_client()
        return client

    yield make
    functions.main.reset()
