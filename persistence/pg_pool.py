"""A PostgreSQL pool made on first use and migrated once: shared by the write-behind writer and the
fair-play store.

Creating the pool does not connect (min_size 0), so a server started during an outage starts; the
first query connects, and the first caller migrates the schema under the migrations' advisory lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from persistence.pg_migrations import migrate

log = logging.getLogger(__name__)

PoolFactory = Callable[[], Awaitable[asyncpg.Pool]]


class LazyPool:
    """Give exactly one of `dsn` (the pool is owned and closed by `close()`) and `factory` (the
    caller's pool: `close()` leaves it alone)."""

    def __init__(
        self,
        dsn: str | None,
        factory: PoolFactory | None,
        schema: str,
        *,
        run_migrations: bool = True,
        max_size: int = 4,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        application_name: str = "arbiter",
    ) -> None:
        if (dsn is None) == (factory is None):
            raise ValueError("give exactly one of dsn and pool_factory")
        self._dsn = dsn
        self._factory = factory
        self.schema = schema
        self._migrated = not run_migrations
        self._max_size = max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._application_name = application_name
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        """The pool, migrated (callers racing here share one creation and one migration)."""
        async with self._lock:
            if self._pool is None:
                self._pool = await self._make()
            if not self._migrated:
                applied = await migrate(self._pool, self.schema)
                if applied:
                    log.info("PostgreSQL schema %s migrated: %s", self.schema, applied)
                self._migrated = True
            return self._pool

    async def _make(self) -> asyncpg.Pool:
        if self._factory is not None:
            return await self._factory()
        pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_size,
            timeout=self.connect_timeout,
            command_timeout=self.command_timeout,
            max_inactive_connection_lifetime=60.0,
            server_settings={"application_name": self._application_name},
        )
        assert pool is not None
        return pool

    async def close(self, timeout: float = 2.0) -> None:
        """Close an owned pool (terminate it if it will not close in time)."""
        if self._pool is None or self._factory is not None:
            return
        pool, self._pool = self._pool, None
        try:
            await asyncio.wait_for(pool.close(), timeout)
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError):
            pool.terminate()
