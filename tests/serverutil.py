"""An in-process campaign server for tests: same GameServer the CLI runs, on a free port."""

from __future__ import annotations

import asyncio
import contextlib
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from engine.security.auth import TokenVerifier
from engine.server import GameServer, ServerConfig, open_server


@contextlib.asynccontextmanager
async def running_server(verifier: TokenVerifier | None = None, **overrides: Any) -> AsyncIterator[GameServer]:
    """A GameServer on a free port, ticking, stopped on exit; `verifier` turns join tokens on."""
    overrides.setdefault("data_dir", "")  # in memory unless a test asks for a data dir
    cfg = ServerConfig(port=0, **overrides)
    server = await open_server(cfg, verifier)
    await server.start()
    task = asyncio.create_task(server.run())
    try:
        yield server
    finally:
        server.request_stop()
        await asyncio.wait_for(task, 15)


def url(server: GameServer) -> str:
    return f"ws://127.0.0.1:{server.port}/"


async def http_get(server: GameServer, path: str) -> tuple[int, bytes]:
    def get() -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()

    return await asyncio.to_thread(get)


async def wait_for(pred: Any, timeout: float = 5.0, step: float = 0.01) -> None:
    """Poll `pred()` until true or fail after `timeout` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not pred():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        await asyncio.sleep(step)
