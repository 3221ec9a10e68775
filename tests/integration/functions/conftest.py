"""functions-framework test clients for barrage's targets (functions/main.py), on a configured app."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from functions import barrage_app
from functions.main import FUNCTIONS_SOURCE_FILE

AsgiClientFactory = Callable[..., TestClient]


@pytest.fixture
def target_environment(tmp_path: Path) -> Iterator[Callable[..., None]]:
    """Configure barrage's app as a deployment's environment would (Kafka and Tablestore unset, so
    the embedded defaults serve, on a fresh SQLite file); no os.environ is touched."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "OTS_", "ALIBABA_CLOUD_", "BARRAGE_"))}

    def apply(**environ: str) -> None:
        barrage_app.app.configure({**base, "BARRAGE_DB": str(tmp_path / "barrage.db"), **environ})

    yield apply
    barrage_app.app.reset()


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
