"""Storage of bans and the fair-play audit log in SQLite: one file per campaign, or in memory.

The anti-cheat policy (engine) decides; this store only keeps its decisions. The records, their
validation and the `FairplayStore` interface are in `persistence/fairplay_records.py`.

The tick only ever calls `append_audit`, which validates, serializes the evidence and enqueues: no disk,
no network, no waiting. Everything else is an awaited admin/startup operation whose I/O runs off the
event-loop thread. See docs/fairplay.md, "Storage of bans and the audit log".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from persistence.batch_writer import BatchWriter
from persistence.fairplay_records import (
    DEFAULT_QUEUE_SIZE,
    AuditEntry,
    AuditRow,
    BanRecord,
    FairplayStore,
    StoreClosedError,
    audit_row,
    entry_from_row,
    finite,
    normalize_ip_range,
    validate_ban,
    validate_lift,
)

log = logging.getLogger(__name__)

DB_FILENAME: Final = "fairplay.sqlite"
SCHEMA_VERSION: Final = 1
_DROP_LOG_INTERVAL: Final = 5.0
T = TypeVar("T")

__all__ = [  # the records are re-exported: one import for a store and what it stores
    "DEFAULT_QUEUE_SIZE",
    "AuditEntry",
    "BanRecord",
    "FairplayStore",
    "SqliteFairplayStore",
    "StoreClosedError",
    "normalize_ip_range",
    "validate_ban",
]

# ---------------------------------------------------------------------------------------- SQLite

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS bans (
    ban_id     INTEGER PRIMARY KEY AUTOINCREMENT,
    account    TEXT,
    ip_range   TEXT,
    campaign   TEXT,
    reason     TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at REAL NOT NULL,
    until      REAL,
    lifted_at  REAL,
    lifted_by  TEXT,
    CHECK (account IS NOT NULL OR ip_range IS NOT NULL)
);
CREATE INDEX IF NOT EXISTS bans_account_idx ON bans (account);
CREATE TABLE IF NOT EXISTS audit_log (
    id       INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    ts       REAL NOT NULL,
    campaign TEXT,
    account  TEXT,
    action   TEXT NOT NULL,
    evidence TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS audit_log_ts_idx ON audit_log (ts);
CREATE INDEX IF NOT EXISTS audit_log_account_idx ON audit_log (account, ts);
"""

_BAN_COLUMNS: Final = "ban_id, account, ip_range, campaign, reason, created_by, created_at, until, lifted_at, lifted_by"
# Same predicate as BanRecord.active, so SQL and Python never disagree about a ban.
_ACTIVE_SQL: Final = "(lifted_at IS NULL OR lifted_at > :now) AND (until IS NULL OR until > :now)"

class _Job:
    """A job for the writer thread (a read, a ban, a flush) and the future that gets its result."""

    __slots__ = ("fn", "future")

    def __init__(self, fn: Callable[[sqlite3.Connection], Any], future: concurrent.futures.Future[Any]) -> None:
        self.fn = fn
        self.future = future


class SqliteFairplayStore:
    """Bans and audit log in one SQLite file (WAL, synchronous=FULL), or in memory when `path` is None.

    One writer thread owns the connection. `append_audit` puts a serialized row on a bounded queue
    (`queue_size` rows, counting the batch being written) and returns; the thread commits whatever has
    accumulated in one transaction (group commit). The async methods hand a job to the same thread and
    await its future, so they run in FIFO order with the audit rows: a read sees every entry appended
    before it. When the queue is full (the disk stalled for a long while) the new entry is refused:
    counted in `audit_dropped`, logged at ERROR (rate-limited) and kept in `dropped_entries`.
    A commit that fails (disk full, database locked by another process) is retried with backoff.

    `append_audit` and `stats` are safe from any thread; the async methods need a running loop.
    """

    def __init__(
        self,
        path: str | os.PathLike[str] | None,
        *,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        busy_timeout: float = 1.0,
        dropped_keep: int = 1000,
    ) -> None:
        if queue_size < 1:
            raise ValueError("queue_size must be >= 1")
        self.path: Path | None = None if path is None else Path(path)
        self.queue_size = queue_size
        self._db = self._open(busy_timeout)

        self._cv = threading.Condition()
        # Guarded by _cv: every counter (the loop thread and the writer both update them).
        self._audit_pending = 0  # audit rows appended, not yet written (queued or being written)
        self._closing = False
        self._closed = False
        self._queued = 0
        self._written = 0
        self._duplicates = 0
        self._dropped = 0
        self._write_errors = 0
        self._batches = 0
        self._last_error: str | None = None
        self.dropped_entries: deque[tuple[AuditRow | str, str]] = deque(maxlen=dropped_keep)
        self._drop_logged_at = -1e9
        self._drops_since_log = 0
        # Set when close() gives up: the writer abandons a batch it cannot commit instead of retrying.
        self._abandon = threading.Event()

        name = "fairplay-writer" if self.path is None else f"fairplay-writer:{self.path.parent.name}"
        # Audit rows and jobs share one FIFO: a job sees every row appended before it.
        self._writer: BatchWriter[AuditRow | _Job] = BatchWriter(name, self._handle)

    @classmethod
    def open(cls, data_dir: str | os.PathLike[str] | None, campaign_id: str, **kwargs: Any) -> SqliteFairplayStore:
        """`<data_dir>/<campaign_id>/fairplay.sqlite`, or in memory when `data_dir` is None or ""."""
        if not data_dir:
            return cls(None, **kwargs)
        if not campaign_id or "/" in campaign_id or campaign_id in {".", ".."}:
            raise ValueError(f"invalid campaign id {campaign_id!r}")
        return cls(Path(data_dir) / campaign_id / DB_FILENAME, **kwargs)

    def _open(self, busy_timeout: float) -> sqlite3.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: explicit BEGIN/COMMIT, so a group commit is exactly one transaction.
        # check_same_thread=False: opened here (errors reach the constructor's caller), used by the writer.
        db = sqlite3.connect(
            ":memory:" if self.path is None else self.path,
            isolation_level=None,
            check_same_thread=False,
            timeout=busy_timeout,
        )
        try:
            if self.path is not None:
                db.execute("PRAGMA journal_mode=WAL")
            # FULL: a ban or an audit row that was committed survives power loss too. Group commits
            # keep the fsync count low under a storm of violations.
            db.execute("PRAGMA synchronous=FULL")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})")
            db.execute("BEGIN IMMEDIATE")
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except BaseException:
            db.close()
            raise
        return db

    # ------------------------------------------------------------------ tick side

    def append_audit(self, entry: AuditEntry) -> None:
        """Enqueue one entry; returns at once. Never raises: problems are counted and logged."""
        try:
            row = audit_row(entry)
        except (TypeError, ValueError, RecursionError) as exc:
            self._drop([repr(entry)], f"unusable entry: {exc}")
            return
        with self._cv:
            if self._closing:
                why = "store closed"
            elif self._audit_pending >= self.queue_size:
                why = f"queue full ({self.queue_size} entries not yet written)"
            else:
                self._audit_pending += 1
                self._queued += 1
                why = ""
        if why or not self._writer.put(row):
            with self._cv:
                self._audit_pending -= 0 if why else 1
            self._drop([row], why or "store closed")

    def stats(self) -> dict[str, object]:
        with self._cv:
            return {
                "queued": self._queued,
                "written": self._written,
                "duplicates": self._duplicates,
                "audit_dropped": self._dropped,
                "write_errors": self._write_errors,
                "pending": self._audit_pending,
                "batches": self._batches,
                "last_error": self._last_error,
            }

    def _drop(self, rows: Sequence[AuditRow | str], why: str) -> None:
        now = time.monotonic()
        with self._cv:
            self._dropped += len(rows)
            self._drops_since_log += len(rows)
            for row in rows:
                self.dropped_entries.append((row, why))
            report = now - self._drop_logged_at >= _DROP_LOG_INTERVAL or why == "store closed"
            if report:
                since, total = self._drops_since_log, self._dropped
                self._drops_since_log = 0
                self._drop_logged_at = now
        if report:
            # The log is the last place the evidence can go; the first row is enough to find the burst.
            log.error(
                "fair-play audit log: %s; %d entries dropped since the last report (%d in total); first: %r",
                why,
                since,
                total,
                rows[0],
            )
        else:
            log.debug("fair-play audit log: %s; dropped %r", why, rows)

    # ------------------------------------------------------------------ writer thread

    def _handle(self, items: list[AuditRow | _Job]) -> bool:
        """The writer thread: runs of audit rows in one transaction each, jobs in between, in order."""
        rows: list[AuditRow] = []
        for item in [*items, None]:
            if isinstance(item, _Job) or item is None:
                if rows:
                    self._write(rows)
                    with self._cv:
                        self._audit_pending -= len(rows)
                    rows = []
                if item is not None:
                    self._do(item)
            else:
                rows.append(item)
        return True

    def _write(self, batch: list[AuditRow]) -> None:
        attempt = 0
        while True:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                before = self._db.total_changes
                self._db.executemany(
                    "INSERT OR IGNORE INTO audit_log (event_id, ts, campaign, account, action, evidence) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    batch,
                )
                inserted = self._db.total_changes - before
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                with self._cv:
                    self._write_errors += 1
                    self._last_error = f"{type(exc).__name__}: {exc}"
                if self._abandon.is_set():
                    self._drop(batch, f"store closing and the batch cannot be committed ({exc})")
                    return
                log.log(
                    logging.WARNING if attempt == 0 else logging.DEBUG,
                    "fair-play audit log: commit of %d entries failed (%s); retrying",
                    len(batch),
                    exc,
                )
                # Waiting on the event: close() cuts the back-off short.
                self._abandon.wait(min(2.0, 0.05 * 2 ** min(attempt, 6)))
                attempt += 1
                continue
            except Exception as exc:  # a bug, not the disk: do not spin on it, and keep the thread alive
                self._rollback()
                log.exception("fair-play audit log: unexpected error writing %d entries", len(batch))
                self._drop(batch, f"unexpected error: {exc}")
                return
            with self._cv:
                self._written += len(batch)
                self._duplicates += len(batch) - inserted
                self._batches += 1
            if attempt:
                log.warning("fair-play audit log: commit succeeded after %d retries", attempt)
            return

    def _rollback(self) -> None:
        if self._db.in_transaction:
            try:
                self._db.execute("ROLLBACK")
            except sqlite3.Error:
                log.debug("rollback failed", exc_info=True)

    def _do(self, job: _Job) -> None:
        future = job.future
        if not future.set_running_or_notify_cancel():
            return
        if self._abandon.is_set():
            future.set_exception(StoreClosedError("fair-play store closed"))
            return
        try:
            result = job.fn(self._db)
        except BaseException as exc:
            self._rollback()
            future.set_exception(exc)
        else:
            future.set_result(result)

    async def _submit(self, job: Callable[[sqlite3.Connection], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            closing = self._closing
        if closing or not self._writer.put(_Job(job, future)):
            raise StoreClosedError("fair-play store closed")
        return await asyncio.wrap_future(future)

    # ------------------------------------------------------------------ async API

    async def flush(self, timeout: float | None = None) -> bool:
        """Wait until every entry appended so far is committed (False on timeout)."""
        try:
            await asyncio.wait_for(self._submit(lambda db: None), timeout)
        except TimeoutError:
            return False
        except StoreClosedError:
            return self.stats()["pending"] == 0
        return True

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
        """Insert a ban and return it. ValueError for a bad argument (e.g. an invalid CIDR)."""
        ban = validate_ban(
            account=account,
            ip_range=ip_range,
            campaign=campaign,
            reason=reason,
            created_by=created_by,
            until=until,
            created_at=created_at,
        )

        def job(db: sqlite3.Connection) -> BanRecord:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                "INSERT INTO bans (account, ip_range, campaign, reason, created_by, created_at, until) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ban.account, ban.ip_range, ban.campaign, ban.reason, ban.created_by, ban.created_at, ban.until),
            )
            db.execute("COMMIT")
            assert cursor.lastrowid is not None
            return ban.record(cursor.lastrowid)

        return await self._submit(job)

    async def remove_bans(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        ban_id: int | None = None,
        by: str,
        now: float | None = None,
    ) -> int:
        """Lift the bans active at `now` that match `account`, `ip_range` (exact range) or `ban_id`.
        Rows are kept (`lifted_at`, `lifted_by`). Returns how many were lifted."""
        acct, ip, bid, by, at = validate_lift(account, ip_range, ban_id, by, now)

        def job(db: sqlite3.Connection) -> int:
            db.execute("BEGIN IMMEDIATE")
            cursor = db.execute(
                f"UPDATE bans SET lifted_at = :now, lifted_by = :by WHERE {_ACTIVE_SQL} "
                "AND (account = :account OR ip_range = :ip OR ban_id = :ban_id)",
                {"now": at, "by": by, "account": acct, "ip": ip, "ban_id": bid},
            )
            db.execute("COMMIT")
            return int(cursor.rowcount)

        return await self._submit(job)

    async def list_bans(self, now: float, include_expired: bool = False) -> list[BanRecord]:
        """Bans active at `now`, or every ban ever made (expired and lifted too), oldest first."""
        where = "" if include_expired else f"WHERE {_ACTIVE_SQL}"
        sql = f"SELECT {_BAN_COLUMNS} FROM bans {where} ORDER BY ban_id"
        at = finite(now, "now")
        return await self._submit(lambda db: [BanRecord.from_row(r) for r in db.execute(sql, {"now": at})])

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
        """Newest first; `since_ts` is inclusive."""
        sql = (
            "SELECT event_id, ts, campaign, account, action, evidence FROM audit_log "
            "WHERE (:account IS NULL OR account = :account) AND (:since IS NULL OR ts >= :since) "
            "AND (:campaign IS NULL OR campaign = :campaign) ORDER BY ts DESC, id DESC LIMIT :limit"
        )
        params = {
            "account": account,
            "since": None if since_ts is None else float(since_ts),
            "campaign": campaign,
            "limit": max(0, int(limit)),
        }
        return await self._submit(lambda db: [entry_from_row(r) for r in db.execute(sql, params)])

    async def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (up to `timeout` seconds), then stop the writer and close the file.
        Entries that could not be written by then are counted in `audit_dropped` and logged."""
        with self._cv:
            if self._closed:
                return
            self._closed = True
            self._closing = True
        if not await asyncio.to_thread(self._writer.close, timeout):
            # Let a writer stuck retrying a stalled disk give up: what is left is dropped (and logged).
            self._abandon.set()
            await asyncio.to_thread(self._writer.close, 5.0)
        if self._writer.stopped:
            self._db.close()
