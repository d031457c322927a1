"""PostgreSQL durability for Arbiter: migrations and the write-behind writer (asyncpg).

One import for the engine:

    from persistence.pg import PgWriteBehind, LedgerTxn, Progress, migrate

See docs/durability.md, section "PostgreSQL", for the wiring and the guarantees.
"""

from __future__ import annotations

from persistence.pg_migrations import MIGRATIONS, Migration, MigrationError, current_version, migrate
from persistence.pg_rows import (
    ACCOUNT,
    AUDIT,
    PROGRESS,
    TXN,
    LedgerTxn,
    MemoryOverflow,
    OverflowSink,
    PendingRow,
    PgUnavailableError,
    Progress,
)
from persistence.pg_writer import PgWriteBehind

__all__ = [
    "ACCOUNT",
    "AUDIT",
    "MIGRATIONS",
    "PROGRESS",
    "TXN",
    "LedgerTxn",
    "MemoryOverflow",
    "Migration",
    "MigrationError",
    "OverflowSink",
    "PendingRow",
    "PgUnavailableError",
    "PgWriteBehind",
    "Progress",
    "current_version",
    "migrate",
]
