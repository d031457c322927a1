"""What the campaigns of one process share: one SQLite writer thread, one PostgreSQL pool, one
per-address connection limiter, the web files, one snapshot-serializing thread, the compiled kernels.

`arbiter serve` makes one for its campaign; `arbiter host` makes one for all of them (engine/host.py),
so a loaded campaign costs its own state and little else: no thread, pool or file copy of its own.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from engine.security.fairplay.conn_limit import ConnLimiter
from engine.web_routes import WEB_DIR, load_files
from persistence.batch_writer import WriterThread
from persistence.pg_pool import LazyPool

if TYPE_CHECKING:
    from engine.config import ServerConfig
    from sim.game_api import Game

log = logging.getLogger("arbiter.shared")


class Shared:
    def __init__(self, cfg: ServerConfig, *, pg_pool_size: int = 8, commit_every_s: float = 0.0) -> None:
        """`commit_every_s`: each campaign's store commits at most this often (a host's group-commit
        window: fewer, fuller commits; acknowledgements wait for them, docs/hosting.md)."""
        self.writer = WriterThread("store-writer", commit_every_s)  # every campaign's SQLite commits
        # min_size 0: created without connecting; migrated once, by its first user.
        self.pg: LazyPool | None = (
            LazyPool(cfg.pg_dsn, None, "public", max_size=pg_pool_size, connect_timeout=5.0, application_name="arbiter")
            if cfg.pg_dsn
            else None
        )
        self.conn_limiter = ConnLimiter(cfg.fairplay.conn)  # per-address caps at accept, for the whole port
        self.web_files = load_files(WEB_DIR)
        # World snapshots are hashed and serialized off the loop; one thread for every campaign.
        self.snapshot_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshot")
        self._warm: set[tuple[str, str]] = set()

    def warm(self, game: Game, replication: str) -> bool:
        """True the first time a game (with this replication) is seen: its kernels need a warm-up."""
        key = (type(game).__qualname__, replication)
        if key in self._warm:
            return False
        self._warm.add(key)
        return True

    async def close(self) -> None:
        if self.pg is not None:
            await self.pg.close()
        self.snapshot_pool.shutdown(wait=False)
