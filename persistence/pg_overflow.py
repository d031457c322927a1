"""An overflow sink for `PgWriteBehind` that keeps rows on disk, next to the campaign's SQLite.

When PostgreSQL is down long enough for the write-behind buffer to fill, rows spill here instead of
staying in memory, so they survive a crash of the server during the outage as well as the outage
itself. `spill` only enqueues (it runs on the tick); a writer thread inserts; `unspill` (awaited by
the write-behind task) reads and deletes in FIFO order off the event loop.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path

from persistence.batch_writer import BatchWriter
from persistence.pg_rows import PendingRow

log = logging.getLogger("arbiter.pg_overflow")

_SCHEMA = "CREATE TABLE IF NOT EXISTS overflow (id INTEGER PRIMARY KEY AUTOINCREMENT, tbl TEXT, row TEXT)"


class SqliteOverflow:
    """FIFO of `PendingRow`s in a SQLite file (WAL, synchronous=NORMAL: survives kill -9)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db_lock = threading.Lock()  # one connection, used by the writer thread and unspill
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        self._count = int(self._db.execute("SELECT COUNT(*) FROM overflow").fetchone()[0])
        self._writer: BatchWriter[PendingRow] = BatchWriter("pg-overflow", self._insert)

    # -- OverflowSink -------------------------------------------------------------------------------
    def spill(self, rows: Sequence[PendingRow]) -> None:
        self._writer.put_many(rows)

    async def unspill(self, limit: int) -> list[PendingRow]:
        return await asyncio.get_running_loop().run_in_executor(None, self._take, limit)

    def pending(self) -> int:
        return self._count + self._writer.pending

    def drain(self) -> list[PendingRow]:
        return self._take(None)

    # -- internals ----------------------------------------------------------------------------------
    def _insert(self, rows: list[PendingRow]) -> bool:
        data = [(r.table, json.dumps(list(r.values))) for r in rows]
        with self._db_lock:
            self._db.execute("BEGIN")
            self._db.executemany("INSERT INTO overflow (tbl, row) VALUES (?, ?)", data)
            self._db.execute("COMMIT")
            self._count += len(rows)
        return True

    def _take(self, limit: int | None) -> list[PendingRow]:
        self._writer.flush(10.0)  # everything spilled so far is on disk: FIFO across spill and unspill
        with self._db_lock:
            sql = "SELECT id, tbl, row FROM overflow ORDER BY id" + ("" if limit is None else " LIMIT ?")
            got = self._db.execute(sql, () if limit is None else (limit,)).fetchall()
            if got:
                self._db.execute("DELETE FROM overflow WHERE id <= ?", (got[-1][0],))
                self._count -= len(got)
        return [PendingRow(tbl, tuple(json.loads(row))) for _, tbl, row in got]

    def close(self) -> None:
        self._writer.close(10.0)
        with self._db_lock:
            self._db.close()
