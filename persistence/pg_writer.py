"""Write-behind of durable player data to PostgreSQL (asyncpg).

The tick calls only the synchronous enqueue methods (`record_transaction`, `upsert_progress`,
`upsert_account`, `append_audit`): each converts its argument to a `PendingRow` of plain values and
appends it to a bounded in-memory buffer, in microseconds, never touching the network. One asyncio
task takes batches from the buffer and writes each batch in one PostgreSQL transaction (`unnest` of
column arrays: one round trip per table), retrying with capped, jittered exponential backoff while the
server is unreachable.

No row is dropped silently:
- buffer full: the row goes to the overflow sink (`spill`), counted in `overflowed` and logged at
  ERROR (rate-limited); the writer takes rows back (`unspill`) whenever the buffer has room again;
- a row PostgreSQL refuses for its data (CHECK, FK, bad value): the batch is bisected inside the
  transaction (savepoints) so only the offending rows are set aside: logged at ERROR, counted in
  `rejected`, kept in `rejected_rows`; the rest of the batch commits and the queue moves on;
- `stop()` after its timeout spills what is still buffered into the overflow sink.

Exactly once: transaction ids and audit event ids are primary/unique keys written with ON CONFLICT DO
NOTHING, progress is an upsert that keeps the newest tick, so re-sending a batch whose commit outcome
was unknown (connection cut during COMMIT) never duplicates anything.

Threading: call everything from the event-loop thread (the tick runs there). See docs/durability.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import Mapping
from typing import Any, Final

import asyncpg

from persistence.pg_migrations import check_schema_name
from persistence.pg_pool import LazyPool, PoolFactory
from persistence.pg_row_sql import RowSql
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
    dumps,
    progress_dict,
    progress_values,
)

log = logging.getLogger(__name__)


# SQLSTATE classes that say "this row's data is wrong": retrying cannot help, the row is set aside.
# 21 cardinality violation, 22 data exception (includes asyncpg's client-side encoding errors),
# 23 integrity constraint violation (CHECK, FK, NOT NULL).
_POISON_CLASSES: Final = frozenset({"21", "22", "23"})


def _is_poison(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        state = getattr(exc, "sqlstate", None) or ""
        return state[:2] in _POISON_CLASSES
    # Errors raised while encoding arguments that asyncpg did not wrap.
    return isinstance(exc, (TypeError, ValueError, OverflowError)) and not isinstance(exc, asyncpg.InterfaceError)


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class PgWriteBehind:
    """Bounded, batched, retrying write-behind buffer for ledger, progress, accounts and audit rows.

    Counters (plain attributes): `queued` (rows offered), `written` (rows committed, including rows
    PostgreSQL already had), `duplicates` (rows skipped by ON CONFLICT: retries, replays), `retries`,
    `failures` (failed batch attempts), `rejected` (poison rows set aside), `overflowed` (rows handed
    to the overflow sink), `unspilled` (rows taken back from it), `batches`, `last_error`,
    `connected`, `last_batch_ms`, `max_buffer_depth`; properties `buffer_depth`, `overflow_pending`.
    """

    def __init__(
        self,
        dsn: str | None = None,
        *,
        pool_factory: PoolFactory | None = None,
        schema: str = "public",
        max_buffer: int = 100_000,
        batch_size: int = 2000,
        overflow: OverflowSink | None = None,
        run_migrations: bool = True,
        backoff_base: float = 0.05,
        backoff_cap: float = 5.0,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        pool_size: int = 4,
        rejected_keep: int = 1000,
        overflow_log_interval: float = 5.0,
    ) -> None:
        if max_buffer < 1 or batch_size < 1:
            raise ValueError("max_buffer and batch_size must be >= 1")
        self.schema = check_schema_name(schema)
        self.max_buffer = max_buffer
        self.batch_size = batch_size
        self.overflow: OverflowSink = overflow if overflow is not None else MemoryOverflow()
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._overflow_log_interval = overflow_log_interval
        self._rng = random.Random()

        # The buffer. Progress and account rows coalesce per key (the newest tick / name wins), so a
        # player saved every few seconds occupies one slot; ledger and audit rows are kept in order.
        self._rows: deque[PendingRow] = deque()
        self._progress: dict[tuple[str, str], PendingRow] = {}
        self._accounts: dict[str, PendingRow] = {}
        self._inflight: list[PendingRow] = []
        self._known_accounts: set[str] = set()

        # min_size 0: a server started during an outage works; the first write connects.
        self._pool = LazyPool(dsn, pool_factory, self.schema, run_migrations=run_migrations,
                              max_size=max(2, pool_size), connect_timeout=connect_timeout,
                              command_timeout=command_timeout, application_name="arbiter-write-behind")  # fmt: skip
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._stopping = False
        self._closed = False
        self._overflow_logged_at = -1e9
        self._overflow_since_log = 0

        self.queued = 0
        self.written = 0
        self.duplicates = 0
        self.retries = 0
        self.failures = 0
        self.rejected = 0
        self.overflowed = 0
        self.unspilled = 0
        self.batches = 0
        self.last_error: str | None = None
        self.connected = False
        self.last_batch_ms = 0.0
        self.max_buffer_depth = 0
        self.rejected_rows: deque[tuple[PendingRow, str]] = deque(maxlen=rejected_keep)

        self._sql = RowSql(self.schema)

    # ------------------------------------------------------------------ tick side (never blocks)

    def record_transaction(self, txn: LedgerTxn | Mapping[str, Any]) -> None:
        """Buffer one ledger row. Never blocks, never raises for bad data (such a row is rejected)."""
        try:
            t = txn if isinstance(txn, LedgerTxn) else LedgerTxn(**txn)
            values = (
                t.txn_id,
                t.account_id,
                t.campaign_id,
                int(t.tick),
                t.kind,
                int(t.resource),
                int(t.amount),
                int(t.balance_after),
                time.time() if t.created_at is None else float(t.created_at),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            self._reject_now(PendingRow(TXN, (repr(txn),)), exc)
            return
        self._offer(PendingRow(TXN, values))

    def upsert_progress(self, progress: Progress | Mapping[str, Any]) -> None:
        """Buffer a player's progress; only the newest tick per (account, campaign) is kept."""
        try:
            values = progress_values(progress if isinstance(progress, Progress) else Progress(**progress))
        except (TypeError, ValueError, OverflowError, AttributeError) as exc:
            self._reject_now(PendingRow(PROGRESS, (repr(progress),)), exc)
            return
        self._offer(PendingRow(PROGRESS, values))

    def upsert_account(self, account_id: str, display_name: str = "") -> None:
        """Create the account (or update its display name). Ledger and progress rows create missing
        accounts by themselves (with an empty name), so this is only needed to set the name."""
        self._offer(PendingRow(ACCOUNT, (account_id, display_name)))

    def append_audit(
        self,
        action: str,
        *,
        campaign_id: str | None = None,
        account_id: str | None = None,
        evidence: Mapping[str, Any] | None = None,
        event_id: str | None = None,
        ts: float | None = None,
    ) -> None:
        """Buffer one audit-log row. Give a deterministic `event_id` when the same event may be
        emitted again (journal replay); otherwise a random one is made."""
        try:
            values = (
                event_id if event_id is not None else uuid.uuid4().hex,
                time.time() if ts is None else float(ts),
                campaign_id,
                account_id,
                action,
                dumps(dict(evidence) if evidence is not None else {}),
            )
        except (TypeError, ValueError, OverflowError) as exc:
            self._reject_now(PendingRow(AUDIT, (action, repr(evidence))), exc)
            return
        self._offer(PendingRow(AUDIT, values))

    @property
    def buffer_depth(self) -> int:
        return len(self._rows) + len(self._progress) + len(self._accounts) + len(self._inflight)

    @property
    def overflow_pending(self) -> int:
        return self.overflow.pending()

    def drain_overflow(self) -> list[PendingRow]:
        """Remove and return every row held by the overflow sink."""
        return self.overflow.drain()

    def stats(self) -> dict[str, object]:
        return {
            "queued": self.queued,
            "written": self.written,
            "duplicates": self.duplicates,
            "retries": self.retries,
            "failures": self.failures,
            "rejected": self.rejected,
            "overflowed": self.overflowed,
            "unspilled": self.unspilled,
            "overflow_pending": self.overflow_pending,
            "batches": self.batches,
            "buffer_depth": self.buffer_depth,
            "max_buffer_depth": self.max_buffer_depth,
            "last_batch_ms": self.last_batch_ms,
            "last_error": self.last_error,
            "connected": self.connected,
        }

    def _offer(self, row: PendingRow) -> None:
        self.queued += 1
        if self._closed:
            self._spill([row], "stopped")
            return
        if not self._put(row, room=self.buffer_depth < self.max_buffer):
            self._spill([row])
            return
        self._idle.clear()
        self._wake.set()

    def _put(self, row: PendingRow, *, room: bool) -> bool:
        """Add to the buffer; coalescing rows (progress, account) fit even without room when their key
        is already buffered. Returns False when the row did not fit."""
        if row.table == PROGRESS:
            key = (row.values[0], row.values[1])
            old = self._progress.get(key)
            if old is not None:
                if row.values[2] >= old.values[2]:
                    self._progress[key] = row
                return True
            if not room:
                return False
            self._progress[key] = row
        elif row.table == ACCOUNT:
            if row.values[0] in self._accounts:
                self._accounts[row.values[0]] = row
                return True
            if not room:
                return False
            self._accounts[row.values[0]] = row
        else:
            if not room:
                return False
            self._rows.append(row)
        depth = self.buffer_depth
        if depth > self.max_buffer_depth:
            self.max_buffer_depth = depth
        return True

    def _spill(self, rows: list[PendingRow], why: str = "buffer full") -> None:
        self.overflowed += len(rows)
        self._overflow_since_log += len(rows)
        now = time.monotonic()
        if why != "buffer full" or now - self._overflow_logged_at >= self._overflow_log_interval:
            log.error(
                "PostgreSQL write-behind %s (max %d rows; last error: %s): %d rows handed to the overflow sink "
                "since the last report, %d in total, %d held there now",
                why,
                self.max_buffer,
                self.last_error,
                self._overflow_since_log,
                self.overflowed,
                self.overflow.pending() + len(rows),
            )
            self._overflow_logged_at = now
            self._overflow_since_log = 0
        try:
            self.overflow.spill(rows)
        except Exception:
            # The sink itself failed: the only place left is the log. Loud, with the data.
            log.exception("overflow sink refused %d rows; rows follow: %r", len(rows), rows)

    def _reject_now(self, row: PendingRow, exc: BaseException) -> None:
        self.queued += 1
        self._record_rejects([(row, _describe(exc))])

    def _record_rejects(self, rejects: list[tuple[PendingRow, str]]) -> None:
        for row, why in rejects:
            self.rejected += 1
            self.rejected_rows.append((row, why))
            log.error("PostgreSQL refused a %s row (%s); set aside, not retried: %r", row.table, why, row.values)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start the writer task. Returns at once; PostgreSQL may still be unreachable (rows buffer)."""
        if self._task is not None:
            raise RuntimeError("already started")
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"pg-write-behind:{self.schema}")

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until the buffer and the overflow sink are empty (False on timeout)."""
        if self._task is None:
            return self.buffer_depth == 0 and self.overflow.pending() == 0
        if self.overflow.pending():
            self._idle.clear()
            self._wake.set()
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def stop(self, flush_timeout: float = 5.0) -> bool:
        """Write what is buffered (and what the overflow sink holds) for up to `flush_timeout` seconds,
        then stop. Rows still unwritten go to the overflow sink. True when everything was written."""
        self._stopping = True
        self._wake.set()
        task = self._task
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), flush_timeout)
            except TimeoutError:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            except Exception:
                log.exception("PgWriteBehind task failed")
        self._closed = True
        left = self._take_all()
        if left:
            self._spill(left, f"stopping after {flush_timeout} s with {len(left)} rows unwritten")
        await self._pool.close()
        return not left and self.overflow.pending() == 0

    def _take_all(self) -> list[PendingRow]:
        rows = [*self._inflight, *self._accounts.values(), *self._progress.values(), *self._rows]
        self._inflight = []
        self._accounts.clear()
        self._progress.clear()
        self._rows.clear()
        return rows

    # ------------------------------------------------------------------ writer task

    def _has_work(self) -> bool:
        return bool(self._rows or self._progress or self._accounts or self.overflow.pending())

    def _take_batch(self) -> list[PendingRow]:
        batch: list[PendingRow] = []
        room = self.batch_size
        while self._accounts and room > 0:
            batch.append(self._accounts.pop(next(iter(self._accounts))))
            room -= 1
        while self._progress and room > 0:
            batch.append(self._progress.pop(next(iter(self._progress))))
            room -= 1
        rows = self._rows
        take = min(room, len(rows))
        batch.extend(rows.popleft() for _ in range(take))
        return batch

    async def _refill(self) -> None:
        room = self.max_buffer - self.buffer_depth
        if room <= 0 or not self.overflow.pending():
            return
        rows = await self.overflow.unspill(min(room, self.batch_size))
        self.unspilled += len(rows)
        back: list[PendingRow] = []
        for row in rows:
            try:
                if not self._put(row, room=self.buffer_depth < self.max_buffer):
                    back.append(row)
            except (TypeError, IndexError, AttributeError, ValueError) as exc:  # malformed row from the sink
                self._record_rejects([(row, f"malformed row from the overflow sink: {_describe(exc)}")])
        if back:  # cannot happen unless the tick filled the buffer meanwhile; keep them in the sink
            self.unspilled -= len(back)
            self.overflow.spill(back)
        elif rows and not self.overflow.pending():
            log.warning("PostgreSQL write-behind: overflow sink emptied (%d rows taken back in total)", self.unspilled)

    async def _run(self) -> None:
        while True:
            if not self._has_work():
                self._idle.set()
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                await self._refill()
            except Exception as exc:
                log.exception("overflow sink unspill failed")
                self.last_error = f"unspill: {_describe(exc)}"
            batch = self._take_batch()
            if not batch:
                await asyncio.sleep(self._backoff(0))
                continue
            self._inflight = batch
            await self._write_with_retry(batch)
            self._inflight = []

    def _backoff(self, attempt: int) -> float:
        delay = min(self._backoff_cap, self._backoff_base * (2 ** min(attempt, 30)))
        return delay * (0.5 + 0.5 * self._rng.random())

    async def _write_with_retry(self, batch: list[PendingRow]) -> None:
        attempt = 0
        outage_started: float | None = None
        while True:
            try:
                pool = await self._pool.get()
                t0 = time.perf_counter()
                written, rejects = await self._write_batch(pool, batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.failures += 1
                self.connected = False
                self.last_error = _describe(exc)
                if outage_started is None:
                    outage_started = time.monotonic()
                    log.warning("PostgreSQL write failed (%s); retrying with backoff", self.last_error)
                else:
                    log.debug("PostgreSQL write retry %d failed: %s", attempt, self.last_error)
                delay = self._backoff(attempt)
                attempt += 1
                self.retries += 1
                await asyncio.sleep(delay)
                continue
            self.last_batch_ms = (time.perf_counter() - t0) * 1000.0
            self.connected = True
            self.batches += 1
            self.written += written
            self._record_rejects(rejects)
            if outage_started is not None:
                log.warning(
                    "PostgreSQL write resumed after %d retries (%.1f s)", attempt, time.monotonic() - outage_started
                )
            return

    async def _write_batch(
        self, pool: asyncpg.Pool, batch: list[PendingRow]
    ) -> tuple[int, list[tuple[PendingRow, str]]]:
        """Write `batch` in one transaction. Returns (rows written, rejected rows with reasons).
        Transient errors propagate (the caller retries the whole batch)."""
        async with pool.acquire(timeout=self._connect_timeout) as conn:
            try:
                async with conn.transaction():
                    dups = await self._sql.write(conn, batch, self._known_accounts)
                rejects: list[tuple[PendingRow, str]] = []
            except Exception as exc:
                if not _is_poison(exc):
                    raise
                async with conn.transaction():
                    rejects, dups = await self._bisect(conn, batch)
        self.duplicates += dups
        refused = {id(row) for row, _ in rejects}
        for row in batch:
            if row.table in (TXN, PROGRESS) and id(row) not in refused:
                self._known_accounts.add(row.values[1 if row.table == TXN else 0])
        if len(self._known_accounts) > 200_000:
            self._known_accounts.clear()
        return len(batch) - len(rejects), rejects

    async def _bisect(
        self, conn: asyncpg.Connection, rows: list[PendingRow]
    ) -> tuple[list[tuple[PendingRow, str]], int]:
        """Inside the caller's transaction: write `rows`, isolating poison rows with savepoints.
        Returns (rejected rows with reasons, duplicates among the rows written)."""
        try:
            async with conn.transaction():  # a savepoint
                dups = await self._sql.write(conn, rows, None)
            return [], dups
        except Exception as exc:
            if not _is_poison(exc):
                raise
            if len(rows) == 1:
                return [(rows[0], _describe(exc))], 0
        mid = len(rows) // 2
        left, dups_left = await self._bisect(conn, rows[:mid])
        right, dups_right = await self._bisect(conn, rows[mid:])
        return left + right, dups_left + dups_right

    # ------------------------------------------------------------------ reads (off the tick)

    async def load_progress(self, account_id: str, campaign_id: str, *, timeout: float = 5.0) -> dict[str, Any] | None:
        """The player's newest progress: from PostgreSQL, or from the buffer when it holds a newer
        (not yet written) row. None for a new player. Raises PgUnavailableError when PostgreSQL cannot
        be reached and the buffer has nothing for this player."""
        pending = self._pending_progress(account_id, campaign_id)
        try:
            pool = await asyncio.wait_for(self._pool.get(), timeout)
            record = await pool.fetchrow(self._sql.load, account_id, campaign_id, timeout=timeout)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            if pending is not None:
                return progress_dict(pending)
            raise PgUnavailableError(f"cannot load progress of {account_id!r}: {_describe(exc)}") from exc
        if pending is not None and (record is None or pending[2] >= record["tick"]):
            return progress_dict(pending)
        if record is None:
            return None
        return progress_dict(tuple(record))

    def _pending_progress(self, account_id: str, campaign_id: str) -> tuple[Any, ...] | None:
        best: tuple[Any, ...] | None = None
        buffered = self._progress.get((account_id, campaign_id))
        candidates = [buffered] if buffered is not None else []
        key = (account_id, campaign_id)
        candidates += [r for r in self._inflight if r.table == PROGRESS and (r.values[0], r.values[1]) == key]
        for row in candidates:
            if best is None or row.values[2] >= best[2]:
                best = row.values
        return best

