"""functions-framework test clients for the targets of functions/main.py."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from flask.testing import FlaskClient
from starlette.testclient import TestClient

import functions.main
from functions.main import FUNCTIONS_SOURCE_FILE

ClientFactory = Callable[..., FlaskClient]
AsgiClientFactory = Callable[..., TestClient]


@pytest.fixture
def target_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """The functions-framework boundary reads os.environ, as it does when deployed; Kafka and
    Tablestore are unset so the embedded defaults serve, on a fresh SQLite file."""

    def apply(**environ: str) -> None:
        monkeypatch.setenv("BARRAGE_DB", str(tmp_path / "barrage.db"))
        monkeypatch.delenv("KAFKA_SERVER", raising=False)
        monkeypatch.delenv("OTS_ENDPOINT", raising=False)
        for name, value in environ.items():
            monkeypatch.setenv(name, value)
        functions.main.reset()

    return apply


@pytest.fixture
def ff_client(target_environment: Callable[..., None]) -> Iterator[ClientFactory]:
    """``ff_client(target, **env)``: functions-framework's own (Flask) app for ``target``."""
    import functions_framework

    def make(target: str, **environ: str) -> FlaskClient:
        target_environment(**environ)
        app = functions_framework.create_app(target=target, source=str(FUNCTIONS_SOURCE_FILE))
        client: FlaskClient = app.test_client()
        return client

    yield make
    functions.main.reset()


@pytest.fixture
def ff_asgi_client(target_environment: Callable[..., None]) -> Iterator[AsgiClientFactory]:
    """``ff_asgi_client(target, **env)``: functions-framework's ASGI app (``--asgi``) for ``target``."""
    from functions_framework.aio import create_asgi_app

    with ExitStack() as stack:

        def make(target: str, **environ: str) -> TestClient:
            target_environment(**environ)
            app = create_asgi_app(target=target, source=str(FUNCTIONS_SOURCE_FILE))
            client: TestClient = stack.enter_context(TestClient(app))
            return client

        yield make
    functions.main.reset()
