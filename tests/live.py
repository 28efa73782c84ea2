"""The real app served by uvicorn on a free port, in a thread: for tests that need real streaming (SSE) or a
real HTTP client (``drawai.client``, the CLI) rather than Starlette's in-process ``TestClient``."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn

from models.platform.redisconn import free_port
from models.platform.settings import Settings
from tests.conftest import wait_for


@contextmanager
def serve(settings: Settings) -> Iterator[str]:
    """Serve ``create_app(settings)`` on 127.0.0.1; yields its base URL, stops it on exit."""
    from service.main import create_app

    port = free_port()
    config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name=f"live-uvicorn-{port}", daemon=True)
    thread.start()
    wait_for(lambda: server.started or not thread.is_alive(), 60, "uvicorn to start")
    assert thread.is_alive(), "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
