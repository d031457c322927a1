"""Reading a campaign's SQLite file: the journal's rows checked and decoded in order
(`JournalReader`, used by `CampaignStore.iter_journal` and its repair), the text form of state
hashes, and `StoreReader`, a read-only follower of the file while its live store writes it (the
relocation shipper). Nothing here writes.
"""

from __future__ import annotations

import logging
import operator
import os
import re
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, NamedTuple, SupportsIndex

import numpy as np

from persistence.journal_codec import JournalCorruptError, TickRecord, decode_tick

log = logging.getLogger(__name__)

_HASH_RE: Final = re.compile(r"[0-9a-f]{16}")


class JournalEntry(NamedTuple):
    record: TickRecord
    state_hash: str | None  # world hash after this tick, recorded every K ticks

    @property
    def tick(self) -> int:
        return self.record.tick


@dataclass(frozen=True)
class JournalProblem:
    tick: int  # first tick that could not be used (the missing tick for a gap)
    reason: str


def format_hash(value: str | SupportsIndex) -> str:
    """Canonical text form of a 64-bit state hash: 16 lowercase hex digits.

    Signed 64-bit ints are taken as their bit pattern, so an int64 from numpy and the uint64 it
    reinterprets give the same text.
    """
    if isinstance(value, str):
        text = value.lower()
        if not _HASH_RE.fullmatch(text):
            raise ValueError(f"state hash {value!r} is not 16 hex digits")
        return text
    number = operator.index(value)
    if not -(1 << 63) <= number < (1 << 64):
        raise ValueError(f"state hash {number} does not fit in 64 bits")
    return f"{number & 0xFFFFFFFFFFFFFFFF:016x}"


def row_problem(
    tick: int, data: object, state_hash: object, expected: int | None, layout: np.dtype
) -> str | None:
    """Why a journal row cannot be replayed, or None if it is intact and in sequence."""
    if expected is not None and tick != expected:
        return f"gap: expected tick {expected}, found {tick}"
    if not isinstance(data, bytes):
        return f"data is {type(data).__name__}, not a blob"
    try:
        record = decode_tick(data, layout, expand=False)
    except JournalCorruptError as exc:
        return f"undecodable record: {exc}"
    if record.tick != tick:
        return f"record says tick {record.tick}, row says {tick}"
    if state_hash is not None and not (isinstance(state_hash, str) and _HASH_RE.fullmatch(state_hash)):
        return f"bad state hash {state_hash!r}"
    return None


class JournalReader(Iterator[JournalEntry]):
    """Iterates intact, consecutive journal records; stops at the first bad one and keeps why.

    After exhaustion, `problem` is None if the journal simply ended, else the first unusable tick and
    the reason. `last_tick` is the last tick yielded (or `after_tick` if none).
    """

    def __init__(self, rows: Iterator[tuple[int, object, object]], after_tick: int, layout: np.dtype) -> None:
        self._rows = rows
        self._layout = layout
        self._done = False
        self.last_tick = after_tick
        self.problem: JournalProblem | None = None

    def __iter__(self) -> JournalReader:
        return self

    def __next__(self) -> JournalEntry:
        if self._done:
            raise StopIteration
        row = next(self._rows, None)
        if row is None:
            self._done = True
            raise StopIteration
        tick, data, state_hash = row
        expected = self.last_tick + 1
        why = row_problem(tick, data, state_hash, expected, self._layout)
        if why is not None:
            self._done = True
            bad = expected if tick != expected else tick
            self.problem = JournalProblem(bad, why)
            log.warning("journal unusable from tick %d: %s", bad, why)
            raise StopIteration
        assert isinstance(data, bytes)
        self.last_tick = tick
        return JournalEntry(decode_tick(data, self._layout), state_hash if isinstance(state_hash, str) else None)


class StoreReader:
    """Reads one campaign.sqlite beside its live `CampaignStore`, on a connection of its own.

    For readers that follow the journal while the server writes it (the relocation shipper): WAL lets
    them read committed rows without blocking the writer. Call from one thread at a time (the caller
    serializes; it may be a different worker thread each call).
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=10.0)
        self._db.execute("PRAGMA query_only=1")

    def meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta").fetchall())

    def last_tick(self) -> int:
        """Newest committed journal tick (0 when the journal is empty)."""
        last = self._db.execute("SELECT MAX(tick) FROM journal").fetchone()[0]
        return 0 if last is None else int(last)

    def held_tick(self) -> int:
        """The newest tick this copy can restore to: its last journal tick, or its newest snapshot's
        when that is later (a copy just restored from PostgreSQL holds a snapshot and no journal yet)."""
        snap = self._db.execute("SELECT MAX(tick) FROM snapshots").fetchone()[0]
        return max(self.last_tick(), 0 if snap is None else int(snap))

    def journal_rows(self, after_tick: int, limit: int) -> list[tuple[int, bytes, str | None]]:
        """Committed journal rows after `after_tick`, oldest first, at most `limit`, stopping at a gap."""
        rows = self._db.execute(
            "SELECT tick, data, state_hash FROM journal WHERE tick > ? ORDER BY tick LIMIT ?", (after_tick, limit)
        ).fetchall()
        out: list[tuple[int, bytes, str | None]] = []
        expected = after_tick + 1
        for tick, data, h in rows:
            if tick != expected:
                break
            out.append((int(tick), bytes(data), h))
            expected += 1
        return out

    def snapshot_raw(self, after_tick: int, max_tick: int) -> tuple[int, str, bytes, int] | None:
        """The newest stored snapshot with after_tick < tick <= max_tick, as stored: (tick, state hash,
        zlib-compressed blob, CRC-32 of the raw blob). Not checked here: the reader of the copy checks."""
        row = self._db.execute(
            "SELECT tick, state_hash, blob, crc FROM snapshots WHERE tick > ? AND tick <= ? ORDER BY tick DESC LIMIT 1",
            (after_tick, max_tick),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), bytes(row[2]), int(row[3]))

    def close(self) -> None:
        self._db.close()
