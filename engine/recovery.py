"""Opening a campaign's data directory: create it, or recover it after a stop or a crash.

Recovery = the newest intact snapshot + the journal after it, re-applied through the same
`Campaign` code the live server runs, checking every state hash recorded on the way. A torn or
corrupt journal tail (a write cut short by kill -9 or a bad disk) is truncated and reported.
The same replay drives `arbiter replay` (engine/tools/replay.py).
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from engine.campaign import Campaign, TickResult
from engine.journal import pack_snapshot, unpack_snapshot
from persistence.batch_writer import WriterThread
from persistence.campaign_reader import JournalEntry, JournalProblem, JournalReader, format_hash
from persistence.campaign_store import DB_FILENAME, CampaignStore
from persistence.journal_codec import FORMAT, MAGIC, JournalFormatError, Layout, campaign_format_meta, layout_of
from sim.statehash import state_hash

log = logging.getLogger("arbiter.recovery")

ENGINE_VERSION = "0.1.0"


class RecoveryError(RuntimeError):
    """The data cannot be re-simulated to a verified state; the server must not start on it."""


@dataclass(slots=True)
class RecoveryReport:
    created: bool = False
    snapshot_tick: int = 0
    replayed_ticks: int = 0
    resumed_tick: int = 0
    hashes_checked: int = 0
    truncated: list[str] = field(default_factory=list)
    seconds: float = 0.0


def campaign_meta(store: CampaignStore) -> dict[str, Any]:
    return _meta(store.get_meta())


def read_meta(path: str | Path) -> dict[str, Any]:
    """A campaign file's meta (game, seed, config, ...), read without opening the store (no lock,
    no writer): a host lists the campaigns of its data dir with it."""
    db = sqlite3.connect(f"file:{Path(path)}?mode=ro", uri=True)
    try:
        rows = db.execute("SELECT key, value FROM meta").fetchall()
    finally:
        db.close()
    return _meta(dict(rows))


def _meta(meta: dict[str, str]) -> dict[str, Any]:
    if not meta:
        return {}
    return {
        "game": meta["game"],
        "seed": int(meta["seed"]),
        "config": json.loads(meta.get("config", "{}")),
        "campaign": meta.get("campaign", ""),
        "tick_rate": int(meta.get("tick_rate", 60)),
    }


# One record as replay needs it: (tick, joins, leaves, inputs, state hash after the tick or None).
Row = tuple[int, list[tuple[int, str]], list[int], np.ndarray, str | None]

_HASH_TEXT = re.compile(r"[0-9a-f]{16}")
_NO_JOINS: list[tuple[int, str]] = []
_NO_LEAVES: list[int] = []


class JournalScan:
    """A fast, batched reader of the journal after `after_tick` (up to `to_tick`), for replay.

    Same contract as the store's `JournalReader` (consecutive, intact records; stops at the first
    unusable row and leaves the reason in `problem`; `last_tick` is the last tick yielded), but it
    reads rows in batches on its own connection and decodes each record once. The common record
    (no joins or leaves, one-byte counts and column mask) takes a fast path: CRC, header and length
    checks, then a read-only view of the present input columns, with no copy. Any other row goes
    through `JournalReader` itself, so joins, leaves and every corrupt or out-of-sequence case get
    exactly its checks, decoding and report.
    """

    def __init__(self, store: CampaignStore, after_tick: int, to_tick: int | None = None, batch: int = 4096) -> None:
        self._layout = store.layout
        self._path = store.path
        self._after = after_tick
        self._to = (1 << 63) - 1 if to_tick is None else to_tick
        self._batch = batch
        self.last_tick = after_tick
        self.problem: JournalProblem | None = None

    def __iter__(self) -> Iterator[Row]:
        return self.rows()

    def rows(self) -> Iterator[Row]:
        db = sqlite3.connect(self._path, check_same_thread=False)
        try:
            cur = db.execute(
                "SELECT tick, data, state_hash FROM journal WHERE tick > ? AND tick <= ? ORDER BY tick",
                (self._after, self._to),
            )
            crc32, frombuffer, layout, match = zlib.crc32, np.frombuffer, layout_of(self._layout), _HASH_TEXT.fullmatch
            while True:
                batch = cur.fetchmany(self._batch)
                if not batch:
                    return
                for row in batch:
                    tick, data, h = row
                    fast = _fast_decode(data, tick, self.last_tick + 1, crc32, frombuffer, layout)
                    if fast is not None and (h is None or (type(h) is str and match(h))):
                        self.last_tick = tick
                        yield tick, _NO_JOINS, _NO_LEAVES, fast, h
                        continue
                    # Slow path: the store's own reader decides (and decodes joins and leaves).
                    reader = JournalReader(iter((row,)), self.last_tick, self._layout)
                    entry = next(reader, None)
                    if entry is None:
                        self.problem = reader.problem
                        return
                    rec = entry.record
                    self.last_tick = rec.tick
                    yield rec.tick, rec.joins, rec.leaves, rec.inputs, entry.state_hash
        finally:
            db.close()


def _fast_decode(
    data: object, tick: int, expected: int, crc32: Any, frombuffer: Any, layout: Layout
) -> np.ndarray | None:
    """The inputs of a join- and leave-free record with one-byte counts and column mask, as their
    present columns (absent ones are zero), or None for the slow path."""
    if tick != expected or type(data) is not bytes:
        return None
    end = len(data) - 4
    if end < 6 or data[0] != MAGIC or data[1] != FORMAT:
        return None
    if crc32(memoryview(data)[:end]) != int.from_bytes(data[end:], "little"):
        return None
    # varint tick: decode it (records carry their tick; it must match the row's)
    pos, value, shift = 2, 0, 0
    while pos < end and shift < 64:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            break
    else:
        return None
    if value != tick or pos + 3 > end:
        return None
    n_joins, n_leaves, n_inputs = data[pos], data[pos + 1], data[pos + 2]
    pos += 3
    if n_joins or n_leaves or n_inputs >= 0x80:
        return None
    if n_inputs == 0:
        empty: np.ndarray = frombuffer(data, dtype=layout.dtype, count=0, offset=pos)
        return empty if pos == end else None
    mask = data[pos]
    if mask >= 0x80 or mask & ~layout.full:
        return None
    dtype = layout.present(mask)[0]
    if pos + 1 + n_inputs * dtype.itemsize != end:
        return None
    out: np.ndarray = frombuffer(data, dtype=dtype, count=n_inputs, offset=pos + 1)
    return out


def replay_records(
    campaign: Campaign,
    entries: Iterable[JournalEntry] | JournalScan,
    *,
    verify: bool = True,
    to_tick: int | None = None,
    on_tick: Callable[[TickResult], None] | None = None,
    on_joins: Callable[[list[tuple[int, str]]], None] | None = None,
    group_events: bool = False,
) -> tuple[int, int]:
    """Re-apply journal entries; returns (ticks replayed, hashes checked). Raises on divergence.

    `entries` is a `JournalScan` (fast) or any iterable of `JournalEntry` (e.g. `store.iter_journal`).
    `on_joins` sees each record's joins (for "players seen"); `group_events` fills
    `TickResult.events` for `on_tick` (only export reads them).
    """
    rows: Iterable[Row]
    if isinstance(entries, JournalScan):
        rows = entries.rows()
    else:
        rows = ((e.record.tick, e.record.joins, e.record.leaves, e.record.inputs, e.state_hash) for e in entries)
    n = checked = 0
    apply = campaign.apply_record
    limit = (1 << 63) - 1 if to_tick is None else to_tick
    for tick, joins, leaves, inputs, h in rows:
        if tick > limit:
            break
        if joins and on_joins is not None:
            on_joins(joins)
        result = apply(joins, leaves, inputs, tick, group_events=group_events)
        n += 1
        if verify and h is not None:
            got = format_hash(state_hash(campaign.world))
            if got != h:
                raise RecoveryError(f"state diverges at tick {tick}: recorded {h}, replay {got}")
            checked += 1
        if on_tick is not None:
            on_tick(result)
    return n, checked


def open_for_replay(store: CampaignStore, meta: Mapping[str, Any], campaign_id: str) -> Campaign:
    """The campaign a store holds, at its genesis, once its journal is known to be readable: of
    this journal format (JournalFormatError otherwise) and of the game's current input layout."""
    layout = store.layout
    campaign = Campaign(meta["game"], meta["seed"], meta["config"], campaign_id)
    if campaign.inputs.dtype != layout:
        raise JournalFormatError(
            f"the journal's inputs ({', '.join(layout.names or ())}) are not game {meta['game']!r}'s inputs "
            f"({', '.join(campaign.inputs.names)}): the game changed since the campaign was created"
        )
    return campaign


def restore_snapshot(campaign: Campaign, store: CampaignStore, max_tick: int | None = None) -> int:
    """Load the newest intact snapshot (≤ max_tick) into `campaign`; returns its tick (0 = genesis)."""
    snap = store.latest_snapshot(max_tick)
    if snap is None:
        return 0
    world, accounts = unpack_snapshot(snap.data)
    if format_hash(state_hash(world)) != snap.state_hash:
        raise RecoveryError(f"snapshot of tick {snap.tick} does not match its recorded hash")
    campaign.replace_world(world, accounts)
    return snap.tick


def open_campaign(
    data_dir: str | Path,
    campaign_id: str,
    game: str,
    seed: int,
    config: Mapping[str, object],
    *,
    tick_rate: int = 60,
    durability: str = "normal",
    commit_delay: float = 0.0,
    writer_thread: WriterThread | None = None,
) -> tuple[Campaign, CampaignStore, RecoveryReport]:
    import time

    t0 = time.perf_counter()
    store = CampaignStore.open(data_dir, campaign_id, durability=durability, commit_delay=commit_delay,  # type: ignore[arg-type]
                               writer_thread=writer_thread)  # fmt: skip
    report = RecoveryReport()
    try:
        meta = campaign_meta(store)
        if not meta:
            campaign = Campaign(game, seed, config, campaign_id)
            store.set_meta(
                {
                    "game": game,
                    "seed": str(seed),
                    "config": json.dumps(dict(config), sort_keys=True),
                    "campaign": campaign_id,
                    "tick_rate": str(tick_rate),
                    "engine_version": ENGINE_VERSION,
                    **campaign_format_meta(campaign.inputs.dtype),
                }
            )
            w = campaign.world
            store.put_snapshot(w.tick, state_hash(w), pack_snapshot(w, campaign.accounts))
            store.flush(10.0)
            report.created = True
        else:
            if (meta["game"], meta["seed"]) != (game, seed):
                log.warning(
                    "data dir holds %s seed %d; ignoring --game %s --seed %d", meta["game"], meta["seed"], game, seed
                )
            campaign = open_for_replay(store, meta, campaign_id)
            report.snapshot_tick = restore_snapshot(campaign, store)
            repair = store.repair_tail(after_tick=report.snapshot_tick)
            if not repair.ok:
                report.truncated.append(str(repair))
                log.warning("journal tail repaired: %s", repair)
            reader = JournalScan(store, report.snapshot_tick)
            report.replayed_ticks, report.hashes_checked = replay_records(campaign, reader)
            if reader.problem is not None:
                report.truncated.append(str(reader.problem))
                log.warning("journal stops early: %s", reader.problem)
                store.truncate_journal(campaign.tick_count)
        report.resumed_tick = campaign.tick_count
    except BaseException:
        store.close(2.0)
        raise
    report.seconds = time.perf_counter() - t0
    return campaign, store, report


def resolve_store_path(path: str | Path) -> tuple[Path, str]:
    """Accept a data dir with one campaign, a campaign dir, or the SQLite file; → (data_dir, id)."""
    p = Path(path)
    if p.is_file():
        if p.name != DB_FILENAME:
            raise FileNotFoundError(f"{p} is not a campaign ({DB_FILENAME})")
        return p.parent.parent, p.parent.name
    if (p / DB_FILENAME).is_file():
        return p.parent, p.name
    found = sorted(d for d in p.iterdir() if (d / DB_FILENAME).is_file()) if p.is_dir() else []
    if len(found) == 1:
        return p, found[0].name
    if not found:
        raise FileNotFoundError(f"no campaign under {p} (a data dir holds CAMPAIGN/{DB_FILENAME})")
    raise ValueError(f"{p} holds several campaigns ({', '.join(d.name for d in found)}); name one")
