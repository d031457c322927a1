"""Browser tests' helpers: Debian's Chromium for Playwright, and a game server on its own thread.

Playwright's sync API (pytest-playwright's session `browser`) owns the test's thread, so the server
under test runs on a thread of its own with its own event loop; `ThreadServer.run` executes a
coroutine there (e.g. to read the world, or to drive a Python SDK client beside the pages).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import Future
from typing import Any, TypeVar

import pytest
import uvloop

from engine.security.auth import TokenVerifier
from engine.server import GameServer, ServerConfig

T = TypeVar("T")

CHROMIUM = "/usr/bin/chromium"
# Without the background-networking flags Chromium's own connections are refused on a closed network.
# The media flags give pages a fake microphone (a beep) without a permission prompt, and let them
# play received audio without a user gesture (the WebRTC voice tests).
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]  # fmt: skip


def chromium_launch_args() -> dict[str, Any]:
    """Launch options for Debian's Chromium; skip (or fail under ARBITER_REQUIRE_SERVICES=1) without it."""
    path = os.environ.get("ARBITER_CHROMIUM", CHROMIUM)
    if not (os.path.isfile(path) or shutil.which(path)):
        reason = f"no Chromium at {path} (apt-get install -y chromium)"
        if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason} (ARBITER_REQUIRE_SERVICES=1)")
        pytest.skip(reason)
    return {"executable_path": path, "args": CHROMIUM_ARGS, "headless": True}


class ThreadServer:
    """A GameServer ticking on its own thread and event loop."""

    def __init__(self, verifier: TokenVerifier | None = None, **overrides: Any) -> None:
        overrides.setdefault("data_dir", "")
        overrides.setdefault("port", 0)
        self.cfg = ServerConfig(**overrides)
        self.loop = uvloop.new_event_loop()
        started: Future[GameServer] = Future()
        self._done: Future[None] = Future()

        def main() -> None:
            asyncio.set_event_loop(self.loop)
            try:
                self.loop.run_until_complete(self._serve(verifier, started))
            except BaseException as exc:  # surfaced to the test by `started` or `stop`
                if not started.done():
                    started.set_exception(exc)
            finally:
                self._done.set_result(None)
                self.loop.close()

        self.thread = threading.Thread(target=main, daemon=True)
        self.thread.start()
        self.server = started.result(120)
        self.port = self.server.port
        self.http = f"http://127.0.0.1:{self.port}"

    async def _serve(self, verifier: TokenVerifier | None, started: Future[GameServer]) -> None:
        server = GameServer(self.cfg, verifier=verifier)
        await server.start()
        started.set_result(server)
        await server.run()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 20.0) -> T:
        """Run a coroutine on the server's loop and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 10.0) -> T:
        """Call fn on the server's loop (where the world may be read safely)."""

        async def wrap() -> T:
            return fn()

        return self.run(wrap(), timeout)

    def stop(self) -> None:
        if not self._done.done():
            self.loop.call_soon_threadsafe(self.server.request_stop)
            self._done.result(30)
        self.thread.join(10)


@contextlib.contextmanager
def thread_server(verifier: TokenVerifier | None = None, **overrides: Any) -> Iterator[ThreadServer]:
    s = ThreadServer(verifier, **overrides)
    try:
        yield s
    finally:
        s.stop()


def wait_until(pred: Callable[[], bool], timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout:.1f} s")
        time.sleep(step)


def new_page(browser: Any) -> Any:
    """A page in a context of its own; the pages' CSP forbids eval, which wait_for_function uses."""
    ctx = browser.new_context(bypass_csp=True, viewport={"width": 960, "height": 600})
    return ctx.new_page()


class LoopThread:
    """An event loop running on a thread of its own, for servers other than the game's."""

    def __init__(self) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 30.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()
