"""The PostgreSQL the tests use: one way to make a fresh database, skip or fail when there is none.

Server: ARBITER_TEST_PG_HOST / _PORT / _USER (default 127.0.0.1:5432, postgres, trust auth). Without
a reachable server the PostgreSQL cases skip with the reason, unless ARBITER_REQUIRE_SERVICES=1 (CI),
then they fail.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import os
import secrets
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest

PG_HOST = os.environ.get("ARBITER_TEST_PG_HOST", "127.0.0.1")
PG_PORT = int(os.environ.get("ARBITER_TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("ARBITER_TEST_PG_USER", "postgres")
_UNREACHABLE = (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)


def dsn(database: str, port: int = PG_PORT) -> str:
    return f"postgresql://{PG_USER}@{PG_HOST}:{port}/{database}"


async def _admin(sql: str) -> None:
    conn = await asyncpg.connect(dsn("postgres"), timeout=3)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _unreachable(exc: BaseException) -> None:
    reason = f"PostgreSQL not reachable at {PG_HOST}:{PG_PORT} as {PG_USER}: {type(exc).__name__}: {exc}"
    if os.environ.get("ARBITER_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (ARBITER_REQUIRE_SERVICES=1)")
    pytest.skip(reason)


@contextlib.asynccontextmanager
async def fresh_database(prefix: str = "arbiter_t") -> AsyncIterator[str]:
    """A new database for one test, dropped after; its name."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    try:
        await _admin(f'CREATE DATABASE "{name}"')
    except _UNREACHABLE as exc:
        _unreachable(exc)
    try:
        yield name
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh database for the whole session; its name. Tests keep apart by schema."""
    name = f"arbiter_test_{secrets.token_hex(4)}"

    def run(sql: str) -> None:
        # In a thread of its own: the fixture may first be requested from inside a running loop.
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            pool.submit(asyncio.run, _admin(sql)).result()

    try:
        run(f'CREATE DATABASE "{name}"')
    except _UNREACHABLE as exc:
        _unreachable(exc)
    yield name
    run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
