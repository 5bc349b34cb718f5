"""Run a Starlette app on a real uvicorn server on a free loopback port, in a thread."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Yields the base URL; stops the server on exit."""
    with run_uvicorn(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning",
                                    access_log=False, lifespan="on")) as url:
        yield url


@contextmanager
def run_uvicorn(config: Any) -> Iterator[str]:
    """uvicorn with this Config in a thread; yields the base URL, stops the server on exit."""
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.01)
    try:
        yield f"http://{config.host}:{config.port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
