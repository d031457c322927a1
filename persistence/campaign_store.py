"""Per-campaign SQLite store: world snapshots and the input journal.

Writes leave the caller's thread: `append_journal` / `put_snapshot` only enqueue on a bounded queue,
and one writer thread group-commits whatever has accumulated. Reads (`latest_snapshot`, `iter_journal`,
`repair_tail`) are synchronous and meant for start-up and tools, never for the tick path.
See docs/durability.md for the format and the guarantee.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import sqlite3
import threading
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, NamedTuple, SupportsIndex

import numpy as np

from persistence.batch_writer import BatchWriter, WriterThread
from persistence.campaign_reader import JournalReader, format_hash, row_problem
from persistence.journal_codec import campaign_layout

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
DB_FILENAME: Final = "campaign.sqlite"
LOCK_FILENAME: Final = "campaign.lock"

Durability = Literal["normal", "full"]
_SYNCHRONOUS: Final[dict[str, str]] = {"normal": "NORMAL", "full": "FULL"}

# campaign_id becomes a directory name: keep it to one safe path component.
_CAMPAIGN_ID_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")

_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS snapshots (
    tick INTEGER PRIMARY KEY, state_hash TEXT NOT NULL, blob BLOB NOT NULL, crc INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS journal (tick INTEGER PRIMARY KEY, data BLOB NOT NULL, state_hash TEXT);
CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value BLOB NOT NULL);
"""

_JOURNAL: Final = 0
_SNAPSHOT: Final = 1
# (kind, seq, tick, payload, state_hash)
_Item = tuple[int, int, int, bytes, str | None]

OnCommit = Callable[[int], None]


class CampaignLockedError(RuntimeError):
    """Another process (or another store in this one) has this campaign open."""


class Snapshot(NamedTuple):
    tick: int
    state_hash: str
    data: bytes  # raw (decompressed) bytes, exactly as given to put_snapshot


@dataclass(frozen=True)
class RepairReport:
    scanned: int  # intact rows checked before the first bad one
    last_good_tick: int | None  # newest journal tick left after the repair
    first_bad_tick: int | None  # first row deleted; None when the journal was intact
    reason: str | None
    removed_rows: int
    removed_last_tick: int | None

    @property
    def ok(self) -> bool:
        return self.first_bad_tick is None


def _connect(path: Path, durability: Durability) -> sqlite3.Connection:
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a batch is exactly one transaction.
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10.0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute(f"PRAGMA synchronous={_SYNCHRONOUS[durability]}")
    # Without a cap the WAL keeps the size of its largest burst (a snapshot) forever.
    db.execute("PRAGMA journal_size_limit=67108864")
    return db


class CampaignStore:
    """One campaign's SQLite file, with a group-committing writer thread.

    Threading: the enqueue methods are safe from any thread and never block. `on_commit` and the
    counters are updated from the writer thread. Read/repair methods use a second connection and must
    not be called concurrently with each other.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durability: Durability = "normal",
        on_commit: OnCommit | None = None,
        queue_size: int = 4096,
        batch_size: int = 1024,
        snapshot_retention: int = 20,
        max_pending_snapshots: int = 2,
        commit_delay: float = 0.0,
        writer_thread: WriterThread | None = None,
    ) -> None:
        """`writer_thread`: commit on a thread shared with other stores (a host's), not one of its own."""
        if durability not in _SYNCHRONOUS:
            raise ValueError(f"durability must be 'normal' or 'full', not {durability!r}")
        if snapshot_retention < 1:
            raise ValueError("snapshot_retention must be >= 1")
        self.path = Path(path)
        self.durability: Durability = durability
        self.on_commit = on_commit
        self._batch_size = max(1, batch_size)
        self._retention = snapshot_retention
        self._max_pending_snapshots = max_pending_snapshots
        self._commit_delay = commit_delay
        self._layout: np.dtype | None = None

        self._lock_fd = self._take_lock(self.path.parent / LOCK_FILENAME)
        try:
            self._db = _connect(self.path, durability)
            self._init_schema()
            self._wdb = _connect(self.path, durability)
        except BaseException:
            os.close(self._lock_fd)
            raise

        last = self._db.execute("SELECT MAX(tick) FROM journal").fetchone()[0]
        last_snap = self._db.execute("SELECT MAX(tick) FROM snapshots").fetchone()[0]
        # Enqueue side, guarded by _lock.
        self._lock = threading.Lock()
        self._seq = 0
        self._next_tick: int | None = None if last is None else last + 1
        self._pending_snapshots = 0
        self._closed = False
        self._abandon = False
        # Plain ints/floats: written by one thread, read anywhere (single stores are atomic in CPython).
        self.committed_tick: int = -1 if last is None else last
        self.committed_snapshot_tick: int = -1 if last_snap is None else last_snap
        self.queued = 0
        self.committed_batches = 0
        self.bytes_written = 0
        self.max_queue_depth = 0
        self.last_commit_ms = 0.0
        self.backpressure_refusals = 0
        self.dropped_snapshots = 0
        self.write_errors = 0
        self.last_error: str | None = None

        # A forgotten close() loses what was not flushed exactly as a crash does: recovery handles it.
        self._writer: BatchWriter[_Item] = BatchWriter(
            f"store-writer:{self.path.parent.name}", self._commit, capacity=queue_size, batch=batch_size,
            thread=writer_thread,
        )

    @classmethod
    def open(
        cls,
        data_dir: str | os.PathLike[str],
        campaign_id: str,
        *,
        durability: Durability = "normal",
        on_commit: OnCommit | None = None,
        queue_size: int = 4096,
        batch_size: int = 1024,
        snapshot_retention: int = 20,
        max_pending_snapshots: int = 2,
        commit_delay: float = 0.0,
        writer_thread: WriterThread | None = None,
    ) -> CampaignStore:
        """Open or create `<data_dir>/<campaign_id>/campaign.sqlite`."""
        if not _CAMPAIGN_ID_RE.fullmatch(campaign_id) or campaign_id in {".", ".."}:
            raise ValueError(f"invalid campaign id {campaign_id!r}")
        directory = Path(data_dir) / campaign_id
        directory.mkdir(parents=True, exist_ok=True)
        return cls(
            directory / DB_FILENAME,
            durability=durability,
            on_commit=on_commit,
            queue_size=queue_size,
            batch_size=batch_size,
            snapshot_retention=snapshot_retention,
            max_pending_snapshots=max_pending_snapshots,
            commit_delay=commit_delay,
            writer_thread=writer_thread,
        )

    @staticmethod
    def _take_lock(lock_path: Path) -> int:
        # Two servers appending to one journal would interleave ticks; the kernel drops a flock when
        # its process dies, so a kill -9 never leaves the campaign locked.
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CampaignLockedError(f"{lock_path.parent} is open elsewhere") from None
        return fd

    def _init_schema(self) -> None:
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RuntimeError(f"{self.path} has schema {version}, newer than this code ({SCHEMA_VERSION})")
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    # ------------------------------------------------------------------ meta

    def get_meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    @property
    def layout(self) -> np.dtype:
        """The journal's input layout (journal_codec.campaign_layout: refuses other formats)."""
        if self._layout is None:
            self._layout = campaign_layout(self.get_meta())
        return self._layout

    def set_meta(self, values: Mapping[str, object]) -> None:
        """Upsert meta keys. Strings are stored as they are, anything else as JSON text."""
        rows = [(k, v if isinstance(v, str) else json.dumps(v, sort_keys=True)) for k, v in values.items()]
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.executemany("INSERT OR REPLACE INTO meta(key, value) VALUES (?, ?)", rows)
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise

    def pragmas(self) -> dict[str, object]:
        """journal_mode and synchronous (1 = NORMAL, 2 = FULL) for diagnostics and tests.

        Read from the reader connection: both connections are configured by the same `_connect`.
        """
        return {
            "journal_mode": self._db.execute("PRAGMA journal_mode").fetchone()[0],
            "synchronous": self._db.execute("PRAGMA synchronous").fetchone()[0],
        }

    # ------------------------------------------------------------- enqueueing

    def append_journal(self, tick: int, blob: bytes, state_hash: str | SupportsIndex | None = None) -> bool:
        """Enqueue tick `tick`'s journal record. Never blocks.

        Returns False when the queue is full: nothing was enqueued, and the caller must keep the
        record and offer it again (backpressure, not loss). Ticks must be consecutive; anything else
        is a programming error (ValueError) because replay cannot cross a hole.
        """
        text_hash = None if state_hash is None else format_hash(state_hash)
        data = blob if isinstance(blob, bytes) else bytes(blob)
        with self._lock:
            self._check_open()
            if self._next_tick is not None and tick != self._next_tick:
                raise ValueError(f"journal tick {tick} out of order: expected {self._next_tick}")
            if not self._writer.put((_JOURNAL, self._seq + 1, tick, data, text_hash)):
                self.backpressure_refusals += 1
                return False
            self._seq += 1
            self._next_tick = tick + 1
            self._note_enqueued()
        return True

    def put_snapshot(self, tick: int, state_hash: str | SupportsIndex, blob: bytes) -> bool:
        """Enqueue a world snapshot (raw bytes; the writer compresses). Never blocks.

        Returns False (and counts `dropped_snapshots`) when the queue is full or enough snapshots are
        already waiting: a missed snapshot only lengthens the next recovery's replay.
        The snapshot must come after the journal record of its tick, so that a committed snapshot
        always has its journal prefix committed too.
        """
        text_hash = format_hash(state_hash)
        # The writer reads it later on another thread: it must not change under it.
        data = blob if isinstance(blob, bytes) else bytes(blob)
        with self._lock:
            self._check_open()
            if self._next_tick is not None and tick >= self._next_tick:
                raise ValueError(f"snapshot of tick {tick} enqueued before its journal record")
            if self._pending_snapshots >= self._max_pending_snapshots:
                self.dropped_snapshots += 1
                return False
            if not self._writer.put((_SNAPSHOT, self._seq + 1, tick, data, text_hash)):
                self.dropped_snapshots += 1
                return False
            self._seq += 1
            self._pending_snapshots += 1
            self._note_enqueued()
        return True

    def _note_enqueued(self) -> None:
        self.queued += 1
        depth = self._writer.depth  # as of that put (no second trip through the writer's lock)
        if depth > self.max_queue_depth:
            self.max_queue_depth = depth

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("campaign store is closed")

    @property
    def queue_depth(self) -> int:
        return self._writer.pending

    def flush(self, timeout: float | None = None) -> bool:
        """Block until everything enqueued before this call is committed; False on timeout."""
        return self._writer.flush(timeout)

    def close(self, timeout: float = 10.0) -> bool:
        """Flush, stop the writer and close the database. Returns False if the flush timed out."""
        with self._lock:
            if self._closed:
                return True
            self._closed = True
        flushed = self.flush(timeout)
        if not flushed:
            # Let a writer stuck retrying a failing disk give up, or join() below would wait forever.
            self._abandon = True
            log.error("campaign store %s closed with %d items uncommitted", self.path, self.queue_depth)
        self._writer.close(timeout)
        if self._writer.stopped:
            self._wdb.close()
        self._db.close()
        os.close(self._lock_fd)
        return flushed

    def __enter__(self) -> CampaignStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------ writer side

    def _commit(self, items: list[_Item]) -> bool:
        journal_rows = [(tick, data, h) for kind, _, tick, data, h in items if kind == _JOURNAL]
        snapshot_rows = []
        for kind, _, tick, data, h in items:
            if kind == _SNAPSHOT:
                # CRC of the raw bytes checks the whole path: what comes back is what was given.
                snapshot_rows.append((tick, h, zlib.compress(data, 1), zlib.crc32(data)))
        written = sum(len(r[1]) for r in journal_rows) + sum(len(r[2]) for r in snapshot_rows)

        backoff = 0.05
        while True:
            started = time.monotonic()
            try:
                self._write(journal_rows, snapshot_rows)
                break
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    self._wdb.execute("ROLLBACK")
                self.write_errors += 1
                self.last_error = repr(exc)
                log.error("campaign store %s: commit failed (%r), retrying", self.path, exc)
                # Retrying forever is deliberate: dropping journal records would break the
                # acknowledgement guarantee; a stuck writer surfaces instead as queue backpressure.
                if self._abandon:
                    return False
                time.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
        elapsed_ms = (time.monotonic() - started) * 1000.0

        top_tick = max((r[0] for r in journal_rows), default=None)
        self.committed_batches += 1
        self.bytes_written += written
        self.last_commit_ms = elapsed_ms
        if top_tick is not None:
            self.committed_tick = top_tick
        if snapshot_rows:
            self.committed_snapshot_tick = max(self.committed_snapshot_tick, *(r[0] for r in snapshot_rows))
            with self._lock:
                self._pending_snapshots -= len(snapshot_rows)
        callback = self.on_commit
        if top_tick is not None and callback is not None:
            try:
                callback(top_tick)
            except Exception:
                # The callback belongs to the caller; its bug must not stop the journal.
                log.exception("on_commit callback failed")
        return True  # flush() returns after this: on_commit has seen these ticks

    def _write(
        self,
        journal_rows: list[tuple[int, bytes, str | None]],
        snapshot_rows: list[tuple[int, str | None, bytes, int]],
    ) -> None:
        db = self._wdb
        db.execute("BEGIN IMMEDIATE")
        if journal_rows:
            db.executemany("INSERT INTO journal(tick, data, state_hash) VALUES (?, ?, ?)", journal_rows)
        if snapshot_rows:
            db.executemany(
                "INSERT OR REPLACE INTO snapshots(tick, state_hash, blob, crc) VALUES (?, ?, ?, ?)",
                snapshot_rows,
            )
            # Tick 0 is the campaign's origin: with it and the full journal, the whole history replays.
            db.execute(
                "DELETE FROM snapshots WHERE tick != 0 AND tick NOT IN "
                "(SELECT tick FROM snapshots ORDER BY tick DESC LIMIT ?)",
                (self._retention,),
            )
        if self._commit_delay:
            time.sleep(self._commit_delay)
        db.execute("COMMIT")

    # -------------------------------------------------- recovery and replay

    def snapshot_ticks(self) -> list[int]:
        return [r[0] for r in self._db.execute("SELECT tick FROM snapshots ORDER BY tick")]

    def journal_bounds(self) -> tuple[int, int] | None:
        """(first, last) journal tick on disk, or None when the journal is empty."""
        first, last = self._db.execute("SELECT MIN(tick), MAX(tick) FROM journal").fetchone()
        return None if first is None else (first, last)

    def latest_snapshot(self, max_tick: int | None = None) -> Snapshot | None:
        """Newest intact snapshot at or before `max_tick`; corrupt ones are skipped and logged."""
        limit = (1 << 63) - 1 if max_tick is None else max_tick
        rows = self._db.execute(
            "SELECT tick, state_hash, blob, crc FROM snapshots WHERE tick <= ? ORDER BY tick DESC", (limit,)
        )
        for tick, state_hash, blob, crc in rows:
            try:
                if not isinstance(blob, bytes):
                    raise ValueError(f"blob is {type(blob).__name__}")
                raw = zlib.decompress(blob)
                if zlib.crc32(raw) != crc:
                    raise ValueError("CRC mismatch")
                text_hash = format_hash(state_hash)
            except (zlib.error, ValueError, TypeError) as exc:
                log.warning("snapshot at tick %d is corrupt (%s); trying an older one", tick, exc)
                continue
            return Snapshot(tick, text_hash, raw)
        return None

    def iter_journal(self, after_tick: int, to_tick: int | None = None) -> JournalReader:
        """Records after `after_tick` up to `to_tick` (inclusive), consecutive and intact.

        Check `reader.problem` after iterating: it says where and why the journal became unusable.
        """
        limit = (1 << 63) - 1 if to_tick is None else to_tick
        cursor = self._db.execute(
            "SELECT tick, data, state_hash FROM journal WHERE tick > ? AND tick <= ? ORDER BY tick",
            (after_tick, limit),
        )
        return JournalReader(iter(cursor), after_tick, self.layout)

    def repair_tail(self, after_tick: int | None = None) -> RepairReport:
        """Find the first torn, corrupt or missing journal record and delete everything from it on.

        Scans rows after `after_tick` (all rows by default; pass the recovery snapshot's tick to skip
        history that recovery does not need). Never raises on corruption: it reports it.
        """
        self.flush()
        layout = self.layout  # a journal of another format is refused here, never "repaired" away
        start = -1 if after_tick is None else after_tick
        anchor = self._db.execute("SELECT 1 FROM journal WHERE tick = ?", (start,)).fetchone()
        prev: int | None = start if anchor else None
        scanned = 0
        bad: int | None = None
        reason: str | None = None
        rows = self._db.execute("SELECT tick, data, state_hash FROM journal WHERE tick > ? ORDER BY tick", (start,))
        for tick, data, state_hash in rows:
            reason = row_problem(tick, data, state_hash, None if prev is None else prev + 1, layout)
            if reason is not None:
                bad = tick
                break
            prev = tick
            scanned += 1
        rows.close()

        removed = 0
        removed_last: int | None = None
        if bad is not None:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                removed, removed_last = self._db.execute(
                    "SELECT COUNT(*), MAX(tick) FROM journal WHERE tick >= ?", (bad,)
                ).fetchone()
                self._db.execute("DELETE FROM journal WHERE tick >= ?", (bad,))
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            log.warning("journal tail repaired: removed %d rows (ticks %d..%s): %s", removed, bad, removed_last, reason)
        last_good = self._sync_after_delete()
        return RepairReport(scanned, last_good, bad, reason if bad is not None else None, removed, removed_last)

    def truncate_journal(self, after_tick: int) -> int:
        """Delete journal rows after `after_tick` (e.g. past a replay hash mismatch). Start-up only."""
        self.flush()
        self._db.execute("BEGIN IMMEDIATE")
        try:
            removed = self._db.execute("DELETE FROM journal WHERE tick > ?", (after_tick,)).rowcount
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._sync_after_delete()
        return int(removed)

    def _sync_after_delete(self) -> int | None:
        last = self._db.execute("SELECT MAX(tick) FROM journal").fetchone()[0]
        with self._lock:
            self._next_tick = None if last is None else last + 1
        self.committed_tick = -1 if last is None else last
        return None if last is None else int(last)
