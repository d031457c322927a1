"""Bans and the fair-play audit log in PostgreSQL: `PgFairplayStore`, the `FairplayStore` of a fleet.

Tables `bans` and `audit_log` (migrations 2 and 3 in `persistence/pg_migrations.py`). Audit rows go
through a `PgWriteBehind` (`persistence/pg_writer.py`): the tick only enqueues, one task writes batches,
retries through outages, hands rows to an overflow sink when its buffer is full instead of dropping them,
and keeps one row per `event_id`. The store runs its own write-behind by default, or rides on the
engine's (`writer=`), so audit rows share its buffer and its on-disk overflow sink. Ban operations are
rare admin actions and go straight to PostgreSQL, awaited. See docs/fairplay.md.

Threading: like `PgWriteBehind`, call everything from the event-loop thread.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

import asyncpg

from persistence.fairplay_records import (
    DEFAULT_QUEUE_SIZE,
    AuditEntry,
    AuditRow,
    BanRecord,
    StoreClosedError,
    audit_row,
    entry_from_row,
    sanitize_json,
    validate_ban,
    validate_lift,
)
from persistence.pg_migrations import check_schema_name
from persistence.pg_pool import LazyPool, PoolFactory
from persistence.pg_rows import AUDIT, MemoryOverflow, OverflowSink, PgUnavailableError
from persistence.pg_writer import PgWriteBehind

log = logging.getLogger(__name__)

T = TypeVar("T")

# Errors that say "the server could not be reached", as opposed to "this statement is wrong".
_UNAVAILABLE: Final = (
    OSError,
    TimeoutError,
    asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError,
    asyncpg.CannotConnectNowError,
)

_EPOCH: Final = "extract(epoch FROM {})::float8"
BAN_COLUMNS: Final = (
    "ban_id, account_id, ip_range, campaign_id, reason, created_by, "
    f"{_EPOCH.format('created_at')}, {_EPOCH.format('until')}, {_EPOCH.format('lifted_at')}, lifted_by"
)
# Same predicate as BanRecord.active ($1 = now, epoch seconds).
ACTIVE_BAN_SQL: Final = (
    "(lifted_at IS NULL OR lifted_at > to_timestamp($1::float8)) "
    "AND (until IS NULL OR until > to_timestamp($1::float8))"
)


def _text(value: str) -> str:
    # PostgreSQL TEXT cannot hold NUL; the character is replaced rather than the row refused.
    return value.replace("\x00", "\ufffd")


def _no_nul(value: str | None) -> str | None:
    return None if value is None else _text(value)


class PgFairplayStore:
    """`FairplayStore` on PostgreSQL.

    Give exactly one of `dsn` (a small pool of `pool_size` connections is created lazily, on first
    use; creating it does not connect, so a store made during an outage works) and `pool_factory`.
    The schema is migrated on first use unless `run_migrations=False`.

    Audit rows: with `writer=None` the store owns a `PgWriteBehind` of `queue_size` rows whose
    overflow sink is `overflow` (default: in memory). With `writer=` the rows go into that writer, which
    the caller starts and stops; `close()` then only flushes. A full buffer never drops a row: it goes
    to the overflow sink (`stats()["overflowed"]`) and back to PostgreSQL later. Rows are lost only when
    PostgreSQL refuses them (counted in `audit_dropped`) or when `close()` ends with rows left in the
    default in-memory sink (counted and logged with their content).
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool_factory: PoolFactory | None = None,
        schema: str = "public",
        writer: PgWriteBehind | None = None,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        overflow: OverflowSink | None = None,
        run_migrations: bool = True,
        pool_size: int = 2,
        connect_timeout: float = 5.0,
        command_timeout: float = 10.0,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
    ) -> None:
        if writer is not None and overflow is not None:
            raise ValueError("overflow belongs to the writer: give it to the PgWriteBehind passed as writer")
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.schema = check_schema_name(schema)
        # max_size + 1: the owned writer's batch must not starve admin reads.
        self._pool = LazyPool(dsn, pool_factory, self.schema, run_migrations=run_migrations,
                              max_size=max(1, pool_size) + 1, connect_timeout=connect_timeout,
                              command_timeout=command_timeout, application_name="arbiter-fairplay")  # fmt: skip
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._owns_writer = writer is None
        self._default_overflow = writer is None and overflow is None
        if writer is None:
            writer = PgWriteBehind(
                pool_factory=self._pool.get,
                schema=self.schema,
                max_buffer=queue_size,
                batch_size=min(2000, queue_size),
                overflow=overflow,
                # The shared pool migrates; the writer need not take the advisory lock a second time.
                run_migrations=False,
                backoff_base=backoff_base,
                backoff_cap=backoff_cap,
                connect_timeout=connect_timeout,
                command_timeout=command_timeout,
            )
        self.writer = writer
        self._start_task: asyncio.Task[None] | None = None
        self._closed = False
        self._queued = 0
        self._dropped = 0

        s = f'"{self.schema}"'
        self._sql_add = (
            f"INSERT INTO {s}.bans (account_id, ip_range, campaign_id, reason, created_by, created_at, until) "
            "VALUES ($1, $2, $3, $4, $5, to_timestamp($6::float8), to_timestamp($7::float8)) "
            f"RETURNING {BAN_COLUMNS}"
        )
        self._sql_lift = (
            f"UPDATE {s}.bans SET lifted_at = to_timestamp($1::float8), lifted_by = $2 WHERE {ACTIVE_BAN_SQL} "
            "AND (account_id = $3::text OR ip_range = $4::text OR ban_id = $5::int8)"
        )
        self._sql_list = f"SELECT {BAN_COLUMNS} FROM {s}.bans WHERE $2::bool OR ({ACTIVE_BAN_SQL}) ORDER BY ban_id"
        self._sql_audit = (
            f"SELECT event_id, {_EPOCH.format('ts')}, campaign_id, account_id, action, evidence::text "
            f"FROM {s}.audit_log WHERE ($1::text IS NULL OR account_id = $1) "
            "AND ($2::float8 IS NULL OR ts >= to_timestamp($2)) AND ($3::text IS NULL OR campaign_id = $3) "
            "ORDER BY ts DESC, id DESC LIMIT $4"
        )

    # ------------------------------------------------------------------ connection

    async def _call(self, what: str, op: Callable[[asyncpg.Pool], Awaitable[T]]) -> T:
        if self._closed:
            raise StoreClosedError("fair-play store closed")
        self._start_writer()
        try:
            pool = await asyncio.wait_for(self._pool.get(), self._connect_timeout + self._command_timeout)
            return await op(pool)
        except _UNAVAILABLE as exc:
            raise PgUnavailableError(f"{what}: PostgreSQL unavailable ({type(exc).__name__}: {exc})") from exc

    def _start_writer(self) -> None:
        # The owned writer starts on first use: the store can be built before the loop runs, and a
        # server that never audits never starts a task.
        if not self._owns_writer or self._start_task is not None or self._closed:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not on the loop thread: the rows wait in the buffer until the next call that is
        self._start_task = loop.create_task(self.writer.start())

    async def _writer_started(self) -> None:
        self._start_writer()
        if self._start_task is not None:
            await self._start_task

    # ------------------------------------------------------------------ tick side

    def append_audit(self, entry: AuditEntry) -> None:
        """Enqueue one entry into the write-behind; returns at once, never raises."""
        try:
            row = audit_row(entry)
            evidence = json.loads(row[5])
            if "\\u0000" in row[5]:
                evidence = sanitize_json(evidence, strip_nul=True)
        except (TypeError, ValueError, RecursionError) as exc:
            self._drop([repr(entry)], f"unusable entry: {exc}")
            return
        if self._closed:
            self._drop([row], "store closed")
            return
        self._queued += 1
        self._start_writer()
        event_id, ts, campaign, account, action, _ = row
        self.writer.append_audit(
            _text(action),
            campaign_id=_no_nul(campaign),
            account_id=_no_nul(account),
            evidence=evidence,
            event_id=_text(event_id),
            ts=ts,
        )

    def _drop(self, rows: Sequence[AuditRow | str | tuple[Any, ...]], why: str) -> None:
        self._dropped += len(rows)
        log.error(
            "fair-play audit log: %s; %d entries lost (%d in total); rows follow: %r",
            why,
            len(rows),
            self._dropped,
            list(rows),
        )

    def stats(self) -> dict[str, object]:
        """`queued`: entries this store accepted; `audit_dropped`: entries lost (unusable, refused by
        PostgreSQL, or left in the in-memory sink at close). `written`, `write_errors`, `overflowed`,
        `duplicates`, `pending` come from the writer: with a shared writer they count all its tables."""
        w = self.writer
        # A shared writer keeps only its last `rejected_keep` refusals: for it this is a lower bound.
        refused = w.rejected if self._owns_writer else sum(1 for row, _ in w.rejected_rows if row.table == AUDIT)
        return {
            "queued": self._queued,
            "written": w.written,
            "duplicates": w.duplicates,
            "audit_dropped": self._dropped + refused,
            "write_errors": w.failures,
            "pending": w.buffer_depth + w.overflow_pending,
            "overflowed": w.overflowed,
            "overflow_pending": w.overflow_pending,
            "connected": w.connected,
            "last_error": w.last_error,
            "shared_writer": not self._owns_writer,
        }

    # ------------------------------------------------------------------ async API

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the writer's buffer and overflow sink are empty (False on timeout)."""
        await self._writer_started()
        return await self.writer.flush(timeout)

    async def add_ban(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        campaign: str | None = None,
        reason: str,
        created_by: str,
        until: float | None = None,
        created_at: float | None = None,
    ) -> BanRecord:
        """Insert a ban and return it (times as stored: microseconds). ValueError for a bad argument,
        PgUnavailableError when PostgreSQL cannot be reached."""
        ban = validate_ban(
            account=account,
            ip_range=ip_range,
            campaign=campaign,
            reason=reason,
            created_by=created_by,
            until=until,
            created_at=created_at,
        )

        async def op(pool: asyncpg.Pool) -> BanRecord:
            row = await pool.fetchrow(
                self._sql_add,
                _no_nul(ban.account),
                ban.ip_range,
                _no_nul(ban.campaign),
                _text(ban.reason),
                _text(ban.created_by),
                ban.created_at,
                ban.until,
            )
            assert row is not None
            return BanRecord.from_row(tuple(row))

        return await self._call("add_ban", op)

    async def remove_bans(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        ban_id: int | None = None,
        by: str,
        now: float | None = None,
    ) -> int:
        """Lift the bans active at `now` that match `account`, `ip_range` (exact range) or `ban_id`;
        rows are kept (`lifted_at`, `lifted_by`). Returns how many were lifted."""
        acct, ip, bid, by, at = validate_lift(account, ip_range, ban_id, by, now)

        async def op(pool: asyncpg.Pool) -> int:
            status = await pool.execute(self._sql_lift, at, _text(by), _no_nul(acct), ip, bid)
            return int(status.rsplit(" ", 1)[-1])  # "UPDATE <n>"

        return await self._call("remove_bans", op)

    async def list_bans(self, now: float, include_expired: bool = False) -> list[BanRecord]:
        """Bans active at `now`, or every ban ever made (expired and lifted too), oldest first."""

        async def op(pool: asyncpg.Pool) -> list[BanRecord]:
            rows = await pool.fetch(self._sql_list, float(now), bool(include_expired))
            return [BanRecord.from_row(tuple(r)) for r in rows]

        return await self._call("list_bans", op)

    async def load_active_bans(self, now: float) -> list[BanRecord]:
        """The bans to enforce, read once at start-up (then kept current by the engine)."""
        return await self.list_bans(now)

    async def read_audit(
        self,
        limit: int = 100,
        account: str | None = None,
        since_ts: float | None = None,
        campaign: str | None = None,
    ) -> list[AuditEntry]:
        """Newest first; `since_ts` inclusive. Entries still in the write-behind buffer are not seen:
        `await flush()` first when that matters."""

        async def op(pool: asyncpg.Pool) -> list[AuditEntry]:
            rows = await pool.fetch(
                self._sql_audit, account, None if since_ts is None else float(since_ts), campaign, max(0, int(limit))
            )
            return [entry_from_row(tuple(r)) for r in rows]

        return await self._call("read_audit", op)

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is buffered (up to `timeout` seconds) and release the pool. An owned writer is
        stopped; a shared one is only flushed (its owner stops it)."""
        if self._closed:
            return
        if self._owns_writer:
            if self.writer.buffer_depth or self.writer.overflow_pending:
                await self._writer_started()
            self._closed = True
            if self._start_task is not None:
                await self._start_task  # stop() before the task exists would skip writing the buffer
                await self.writer.stop(flush_timeout=timeout)
            if self._default_overflow and isinstance(self.writer.overflow, MemoryOverflow):
                left = self.writer.drain_overflow()
                if left:
                    # In memory they would die with the process: say so loudly, with the evidence.
                    self._drop([r.values for r in left], f"PostgreSQL did not take them within {timeout} s")
        else:
            self._closed = True
            if not await self.writer.flush(timeout):
                log.warning("fair-play store closed with audit rows still in the shared writer's buffer")
        await self._pool.close()
