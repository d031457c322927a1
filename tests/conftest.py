"""Shared test setup: a persistent numba cache, uvloop for async tests, service requirements."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

# Before numba is imported anywhere: compiled kernels survive between test processes and runs.
os.environ.setdefault("NUMBA_CACHE_DIR", str(Path(__file__).resolve().parent.parent / ".numba_cache"))
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import uvloop


def pytest_asyncio_loop_factories(config, item):  # type: ignore[no-untyped-def]
    return {"uvloop": uvloop.new_event_loop}


import pytest  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def _warm_kernels() -> None:
    """Compile (or load) every numba kernel once, before any test measures time.

    On a fresh machine the first call of a kernel compiles it for seconds; inside a timed test that
    would look like a stalled server or client.
    """
    from netcode.prediction import warmup as prediction_warmup
    from netcode.replication.warm import warmup as replication_warmup
    from sim.registry import game_names, make_game

    for game in game_names():
        make_game(game).warmup()
    replication_warmup()
    prediction_warmup()


@pytest.fixture
def drive() -> type[Driver]:
    """The world driver (tests/worlds.py): `drive("wander", {"npcs": 20})` → a Driver."""
    return Driver


@pytest.fixture
def tokens() -> Tokens:
    """Join tokens for tests (tests/tokens.py): a key ring, another one, an issuer, verifiers."""
    return Tokens()


from tests.pgutil import pg_database  # noqa: E402, F401  (the session PostgreSQL database, for every test file)
from tests.tokens import Tokens  # noqa: E402
from tests.worlds import Driver  # noqa: E402


@pytest.fixture(scope="session")
def browser_type_launch_args() -> dict[str, object]:
    """pytest-playwright launches Debian's Chromium (Playwright's own download cannot work here)."""
    from tests.browserutil import chromium_launch_args

    return chromium_launch_args()


@pytest.fixture(scope="session")
def browser_context_args() -> dict[str, object]:
    # The pages' CSP forbids eval, which Playwright's wait_for_function uses.
    return {"bypass_csp": True, "viewport": {"width": 960, "height": 600}}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Any:
    """Playwright's sync API (the browser tests' session browser) leaves its event loop marked as
    running on this thread between its calls; an asyncio test would then refuse to run its own
    loop. Tests that do not use the browser run with the mark cleared, and it is put back after."""
    import asyncio

    saved = asyncio.events._get_running_loop()
    aside = saved is not None and "browser" not in getattr(item, "fixturenames", ())
    if aside:
        asyncio.events._set_running_loop(None)
    try:
        yield
    finally:
        if aside:
            asyncio.events._set_running_loop(saved)
