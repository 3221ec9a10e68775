"""An ASGI app on a real uvicorn server (127.0.0.1, a free port) in a background thread, for tests.

What Starlette's TestClient cannot show needs real sockets: streams read as they arrive,
requests in flight at the same time, chunked bodies, clients that stop reading.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from typing import Any

import uvicorn

from local.supervisor import free_port


@contextlib.contextmanager
def serving(app: Any, *, timeout_s: float = 10.0) -> Iterator[str]:
    """Serve ``app``; yields its base URL (``http://127.0.0.1:PORT``); stops the server after."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off",
                            timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError(f"uvicorn did not start on port {port}")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
