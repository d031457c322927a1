"""Storage of bans and the fair-play audit log.

The anti-cheat policy (engine) decides; this module only keeps its decisions. Two record types:

- `BanRecord`: who may not play (an account, an IP range, or both), where (one campaign or all), until
  when (None = permanent). Lifting a ban keeps its row (`lifted_at`, `lifted_by`): the history is part
  of the evidence of an appeal.
- `AuditEntry`: one decision (warn, kick, ban, unban, admin_kick, ...) with its evidence, a JSON object
  (the engine puts the violation rows and `{"from_tick": a, "to_tick": b}`, the journal range that
  reproduces them, in it).

`FairplayStore` is the interface the engine programs against; `SqliteFairplayStore` (here, one file per
campaign, or in memory) and `PgFairplayStore` (`persistence/pg_fairplay.py`) implement it.

The tick only ever calls `append_audit`, which validates, serializes the evidence and enqueues: no disk,
no network, no waiting. Everything else is an awaited admin/startup operation whose I/O runs off the
event-loop thread. See docs/fairplay.md, "Storage of bans and the audit log".
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import ipaddress
import json
import logging
import math
import os
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TypeVar, runtime_checkable

log = logging.getLogger(__name__)

DB_FILENAME: Final = "fairplay.sqlite"
SCHEMA_VERSION: Final = 1
DEFAULT_QUEUE_SIZE: Final = 10_000

# Nested evidence deeper than this is cut, so a self-referencing structure cannot recurse forever.
_MAX_EVIDENCE_DEPTH: Final = 32
_DROP_LOG_INTERVAL: Final = 5.0

T = TypeVar("T")

# One serialized audit row, ready for either database: (event_id, ts, campaign, account, action,
# evidence_json). Plain values, so it can be handed between threads and logged as it is.
AuditRow = tuple[str, float, str | None, str | None, str, str]


# ---------------------------------------------------------------------------------------- records


def _new_event_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class BanRecord:
    """One ban. Times are Unix epoch seconds. A ban targets an account, an IP range (CIDR text in
    canonical form, e.g. "10.0.0.0/8", a single address as "/32" or "/128"), or both; it applies when
    either target matches. `campaign` None = every campaign that consults this store."""

    ban_id: int
    account: str | None
    ip_range: str | None
    campaign: str | None
    reason: str
    created_by: str
    created_at: float
    until: float | None = None
    lifted_at: float | None = None
    lifted_by: str | None = None

    def active(self, now: float) -> bool:
        """In force at `now`: not expired and not lifted (as of `now`, so history can be asked too)."""
        if self.lifted_at is not None and self.lifted_at <= now:
            return False
        return self.until is None or now < self.until

    def applies_to(self, *, account: str | None, ip: str | None, campaign: str | None, now: float) -> bool:
        """Whether this ban refuses a hello from `account` at address `ip` to `campaign` at `now`.
        An unparsable `ip` matches no range (the account part still applies)."""
        if not self.active(now):
            return False
        if self.campaign is not None and self.campaign != campaign:
            return False
        if self.account is not None and account is not None and self.account == account:
            return True
        if self.ip_range is None or not ip:
            return False
        try:
            address = ipaddress.ip_address(ip.split("%", 1)[0])  # drop an IPv6 zone ("fe80::1%eth0")
        except ValueError:
            return False
        # A dual-stack socket reports IPv4 peers as ::ffff:a.b.c.d; IPv4 ranges must still catch them.
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        network = ipaddress.ip_network(self.ip_range, strict=False)
        return address.version == network.version and address in network

    def to_json(self) -> dict[str, Any]:
        return {
            "ban_id": self.ban_id,
            "account": self.account,
            "ip_range": self.ip_range,
            "campaign": self.campaign,
            "reason": self.reason,
            "created_by": self.created_by,
            "created_at": self.created_at,
            "until": self.until,
            "lifted_at": self.lifted_at,
            "lifted_by": self.lifted_by,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditEntry:
    """One fair-play decision. Give a deterministic `event_id` when the same decision may be emitted
    again (journal replay): both stores keep the first row per event_id. `ts` is Unix epoch seconds."""

    action: str
    ts: float = field(default_factory=time.time)
    campaign: str | None = None
    account: str | None = None
    evidence: Mapping[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=_new_event_id)

    def to_json(self) -> dict[str, Any]:
        return {
            "event_id": self.event_id,
            "ts": self.ts,
            "campaign": self.campaign,
            "account": self.account,
            "action": self.action,
            "evidence": dict(self.evidence),
        }


def matching_bans(
    bans: Sequence[BanRecord], *, account: str | None, ip: str | None, campaign: str | None, now: float
) -> list[BanRecord]:
    """The bans among `bans` that refuse this hello (for the engine's check at hello)."""
    return [b for b in bans if b.applies_to(account=account, ip=ip, campaign=campaign, now=now)]


# ---------------------------------------------------------------------------------------- validation


def normalize_ip_range(text: str) -> str:
    """Canonical CIDR text of `text` ("10.0.0.0/8", "192.0.2.7" -> "192.0.2.7/32", IPv6 likewise).

    Raises ValueError for anything else, including a range with host bits set ("10.0.0.1/8"): that is
    a typo more often than not, and banning the wrong network is worse than refusing the command."""
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"invalid IP range {text!r}")
    try:
        return str(ipaddress.ip_network(text.strip(), strict=True))
    except ValueError as exc:
        raise ValueError(f"invalid IP range {text!r}: {exc}") from None


def _optional_name(value: str | None, what: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string or None, not {value!r}")
    return value


def _required_name(value: str, what: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string, not {value!r}")
    return value


def _finite(value: float, what: str) -> float:
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a finite number, not {value!r}")
    return number


@dataclass(frozen=True, slots=True)
class NewBan:
    """The validated fields of a ban about to be inserted (shared by both stores)."""

    account: str | None
    ip_range: str | None
    campaign: str | None
    reason: str
    created_by: str
    created_at: float
    until: float | None

    def record(self, ban_id: int) -> BanRecord:
        return BanRecord(
            ban_id,
            self.account,
            self.ip_range,
            self.campaign,
            self.reason,
            self.created_by,
            self.created_at,
            self.until,
        )


def validate_ban(
    *,
    account: str | None,
    ip_range: str | None,
    campaign: str | None,
    reason: str,
    created_by: str,
    until: float | None,
    created_at: float | None,
) -> NewBan:
    """Check and normalize `add_ban`'s arguments; ValueError says what is wrong."""
    account = _optional_name(account, "account")
    ip = None if ip_range is None else normalize_ip_range(ip_range)
    if account is None and ip is None:
        raise ValueError("a ban needs an account, an IP range, or both")
    created = time.time() if created_at is None else _finite(created_at, "created_at")
    end = None if until is None else _finite(until, "until")
    if end is not None and end <= created:
        raise ValueError(f"until ({end}) must be after created_at ({created})")
    return NewBan(
        account,
        ip,
        _optional_name(campaign, "campaign"),
        _required_name(reason, "reason"),
        _required_name(created_by, "created_by"),
        created,
        end,
    )


def validate_lift(
    account: str | None, ip_range: str | None, ban_id: int | None, by: str, now: float | None
) -> tuple[str | None, str | None, int | None, str, float]:
    """Check `remove_bans`' arguments: at least one selector, a non-empty `by`."""
    account = _optional_name(account, "account")
    ip = None if ip_range is None else normalize_ip_range(ip_range)
    if ban_id is not None and (isinstance(ban_id, bool) or not isinstance(ban_id, int)):
        raise ValueError(f"ban_id must be an int, not {ban_id!r}")
    if account is None and ip is None and ban_id is None:
        raise ValueError("say which bans to lift: account, ip_range and/or ban_id")
    return account, ip, ban_id, _required_name(by, "by"), time.time() if now is None else _finite(now, "now")


def _json_default(obj: object) -> object:
    # numpy scalars and arrays (violation rows come straight from the sim's event arrays).
    tolist = getattr(obj, "tolist", None)
    if callable(tolist):
        return tolist()
    return str(obj)


def sanitize_json(value: object, *, strip_nul: bool = False, _depth: int = 0) -> object:
    """A JSON-safe copy: non-finite floats become "NaN"/"Infinity"/"-Infinity" (PostgreSQL's JSONB and
    strict JSON readers refuse them, and a NaN input is exactly what a cheat may send); with
    `strip_nul`, NUL characters become U+FFFD (JSONB refuses \\u0000, and a player-chosen string must
    not be able to make its own evidence unstorable)."""
    if _depth > _MAX_EVIDENCE_DEPTH:
        return "<too deep>"
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd") if strip_nul else value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value).replace("inf", "Infinity").replace("nan", "NaN")
    if isinstance(value, Mapping):
        out: dict[str, object] = {}
        for key, item in value.items():
            text = str(key).replace("\x00", "\ufffd") if strip_nul else str(key)
            out[text] = sanitize_json(item, strip_nul=strip_nul, _depth=_depth + 1)
        return out
    if isinstance(value, (list, tuple, set, frozenset)):
        return [sanitize_json(v, strip_nul=strip_nul, _depth=_depth + 1) for v in value]
    if value is None or isinstance(value, (int, bool)):
        return value
    converted = _json_default(value)
    return sanitize_json(converted, strip_nul=strip_nul, _depth=_depth + 1)


def evidence_json(evidence: Mapping[str, Any]) -> str:
    """Serialize evidence to strict JSON text. Taken at enqueue time, so later changes to the caller's
    dict do not reach the log. The fast path is one C-level dumps; the slow path only runs for NaN,
    infinities or a cycle."""
    if not isinstance(evidence, Mapping):
        raise TypeError(f"evidence must be a mapping, not {type(evidence).__name__}")
    try:
        return json.dumps(evidence, separators=(",", ":"), default=_json_default, allow_nan=False)
    except ValueError:
        return json.dumps(sanitize_json(evidence), separators=(",", ":"), default=_json_default, allow_nan=False)


def audit_row(entry: AuditEntry) -> AuditRow:
    """Validate and serialize an entry for either store. Raises TypeError/ValueError when it is unusable."""
    if not isinstance(entry, AuditEntry):
        raise TypeError(f"expected an AuditEntry, not {type(entry).__name__}")
    return (
        _required_name(entry.event_id, "event_id"),
        _finite(entry.ts, "ts"),
        _optional_name(entry.campaign, "campaign"),
        _optional_name(entry.account, "account"),
        _required_name(entry.action, "action"),
        evidence_json(entry.evidence),
    )


def entry_from_row(row: Sequence[Any]) -> AuditEntry:
    event_id, ts, campaign, account, action, evidence = row
    return AuditEntry(
        event_id=event_id,
        ts=float(ts),
        campaign=campaign,
        account=account,
        action=action,
        evidence=json.loads(evidence) if evidence else {},
    )


# ---------------------------------------------------------------------------------------- interface


@runtime_checkable
class FairplayStore(Protocol):
    """What the engine needs from a ban/audit store.

    `append_audit` is the only method for the tick: it never blocks and never raises (an unusable or
    unqueueable entry is counted and logged, see `stats()`). The async methods do their I/O off the
    event loop. `stats()` has at least `queued`, `written`, `audit_dropped`, `write_errors`, `pending`.
    """

    def append_audit(self, entry: AuditEntry) -> None: ...

    async def flush(self, timeout: float | None = None) -> bool: ...

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
    ) -> BanRecord: ...

    async def remove_bans(
        self,
        *,
        account: str | None = None,
        ip_range: str | None = None,
        ban_id: int | None = None,
        by: str,
        now: float | None = None,
    ) -> int: ...

    async def list_bans(self, now: float, include_expired: bool = False) -> list[BanRecord]: ...

    async def load_active_bans(self, now: float) -> list[BanRecord]: ...

    async def read_audit(
        self,
        limit: int = 100,
        account: str | None = None,
        since_ts: float | None = None,
        campaign: str | None = None,
    ) -> list[AuditEntry]: ...

    def stats(self) -> dict[str, object]: ...

    async def close(self, timeout: float = 5.0) -> None: ...


class StoreClosedError(RuntimeError):
    """The store was closed."""


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

_Command = tuple[Callable[[sqlite3.Connection], Any], "concurrent.futures.Future[Any]"]


def _ban_from_row(row: Sequence[Any]) -> BanRecord:
    ban_id, account, ip_range, campaign, reason, created_by, created_at, until, lifted_at, lifted_by = row
    return BanRecord(
        int(ban_id),
        account,
        ip_range,
        campaign,
        reason,
        created_by,
        float(created_at),
        None if until is None else float(until),
        None if lifted_at is None else float(lifted_at),
        lifted_by,
    )


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
        # Guarded by _cv: the queue, the jobs, and every counter (the loop thread and the writer both
        # update them).
        self._audits: deque[AuditRow] = deque()
        self._jobs: deque[_Command] = deque()
        self._inflight = 0
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
        # Daemon: a forgotten close() must not hang interpreter exit; committed rows are on disk already.
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

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
            elif len(self._audits) + self._inflight >= self.queue_size:
                why = f"queue full ({self.queue_size} entries not yet written)"
            else:
                self._audits.append(row)
                self._queued += 1
                self._cv.notify()
                return
        self._drop([row], why)

    def stats(self) -> dict[str, object]:
        with self._cv:
            return {
                "queued": self._queued,
                "written": self._written,
                "duplicates": self._duplicates,
                "audit_dropped": self._dropped,
                "write_errors": self._write_errors,
                "pending": len(self._audits) + self._inflight,
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

    def _run(self) -> None:
        try:
            while True:
                with self._cv:
                    while not self._audits and not self._jobs and not self._closing:
                        self._cv.wait()
                    if self._closing and not self._audits and not self._jobs:
                        return
                    batch = list(self._audits)
                    self._audits.clear()
                    self._inflight = len(batch)
                    jobs = list(self._jobs)
                    self._jobs.clear()
                # Audit rows taken in the same snapshot as the jobs go first: a read or a flush
                # enqueued after an append sees it.
                if batch:
                    self._write(batch)
                with self._cv:
                    self._inflight = 0
                for job, future in jobs:
                    self._do(job, future)
        finally:
            self._db.close()
            with self._cv:
                left = list(self._jobs)
                self._jobs.clear()
            for _, future in left:
                if future.set_running_or_notify_cancel():
                    future.set_exception(StoreClosedError("fair-play store closed"))

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

    def _do(self, job: Callable[[sqlite3.Connection], Any], future: concurrent.futures.Future[Any]) -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = job(self._db)
        except BaseException as exc:
            self._rollback()
            future.set_exception(exc)
        else:
            future.set_result(result)

    async def _submit(self, job: Callable[[sqlite3.Connection], T]) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._cv:
            if self._closing:
                raise StoreClosedError("fair-play store closed")
            self._jobs.append((job, future))
            self._cv.notify()
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
        at = _finite(now, "now")
        return await self._submit(lambda db: [_ban_from_row(r) for r in db.execute(sql, {"now": at})])

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
            self._cv.notify()
        await asyncio.to_thread(self._thread.join, timeout)
        if self._thread.is_alive():
            self._abandon.set()
            await asyncio.to_thread(self._thread.join, 5.0)
        with self._cv:
            left = list(self._audits)
            self._audits.clear()
        if left:
            self._drop(left, "store closed before these entries were written")
