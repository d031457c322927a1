"""A campaign's copy in PostgreSQL, for relocation: journal segments and snapshots, fenced by an epoch.

The copy mirrors the campaign's SQLite (persistence/campaign_store.py): the newest snapshots exactly
as SQLite stores them (zlib blob + CRC-32 of the raw bytes) and the journal records after the older
kept snapshot, grouped into segments (msgpack, then zlib). With it, a server that has no local data
for a campaign rebuilds a local store (`write_local`) and recovers from it as after a crash.

Ownership: `shipped_campaigns.epoch` is a fencing token. A server takes a campaign with `claim`
(epoch + 1) and every write re-reads the epoch under a row lock, in the same transaction as the write,
so a server that was presumed dead and comes back can never append to a campaign another server now
runs: its writes raise `FencedError`.

Only data access and the codec live here; when to ship (off the tick, batching, backoff, the
acknowledgement gate) is engine/relocation.py. Tables: migration 20 (persistence/pg_migrations.py).
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

import asyncpg
import msgpack

from persistence.campaign_reader import StoreReader
from persistence.campaign_store import DB_FILENAME, CampaignStore
from persistence.pg_migrations import check_schema_name

SEGMENT_VERSION: Final = 1
SNAPSHOTS_KEPT: Final = 2  # the newest, and one older in case the newest does not decompress
META_EPOCH: Final = "ship_epoch"  # key of the local meta table: the epoch this copy was last shipped under

JournalRow = tuple[int, bytes, str | None]  # (tick, record, state hash or None), as in campaign.sqlite


class FencedError(RuntimeError):
    """PostgreSQL holds a newer copy of the campaign (another server took it, or this server's local
    data is behind): this server must not ship it."""


@dataclass(frozen=True, slots=True)
class Claim:
    epoch: int
    journal_tick: int  # every record up to here is already in PostgreSQL
    snapshot_tick: int
    created: bool  # the campaign was not in PostgreSQL before


@dataclass(frozen=True, slots=True)
class ShippedSnapshot:
    tick: int
    state_hash: str
    blob: bytes  # zlib-compressed, as campaign.sqlite stores it
    crc: int  # CRC-32 of the decompressed bytes

    def raw(self) -> bytes:
        """The decompressed blob; ValueError when it is damaged."""
        try:
            data = zlib.decompress(self.blob)
        except zlib.error as exc:
            raise ValueError(f"snapshot of tick {self.tick} does not decompress: {exc}") from exc
        if zlib.crc32(data) != self.crc:
            raise ValueError(f"snapshot of tick {self.tick} fails its CRC")
        return data


@dataclass(slots=True)
class ShippedCampaign:
    """What a restore needs: the meta, the newest intact snapshot (None: the genesis) and the journal
    records after it, consecutive."""

    campaign_id: str
    meta: dict[str, str]
    epoch: int
    journal_tick: int
    snapshot: ShippedSnapshot | None
    journal: list[JournalRow] = field(default_factory=list)
    skipped_snapshots: list[str] = field(default_factory=list)  # why newer snapshots were not usable

    @property
    def base_tick(self) -> int:
        return 0 if self.snapshot is None else self.snapshot.tick


# -- segment codec ---------------------------------------------------------------------------------
def encode_segment(rows: Sequence[JournalRow]) -> bytes:
    """Consecutive journal rows → one compressed segment."""
    body = msgpack.packb([SEGMENT_VERSION, [[t, d, h] for t, d, h in rows]], use_bin_type=True)
    return zlib.compress(body, 6)


def decode_segment(data: bytes) -> list[JournalRow]:
    try:
        version, rows = msgpack.unpackb(zlib.decompress(data), raw=False)
    except (zlib.error, ValueError, TypeError, msgpack.UnpackException) as exc:
        raise ValueError(f"undecodable journal segment: {exc}") from exc
    if version != SEGMENT_VERSION:
        raise ValueError(f"journal segment version {version}, this code reads {SEGMENT_VERSION}")
    return [(int(t), bytes(d), None if h is None else str(h)) for t, d, h in rows]


# -- PostgreSQL ------------------------------------------------------------------------------------
class ShipStore:
    """SQL over the shipped_* tables of one schema. Every method takes a connection (or a pool for
    the reads) from the caller and runs in its own transaction."""

    def __init__(self, schema: str = "public") -> None:
        s = f'"{check_schema_name(schema)}"'
        self._head = f"SELECT epoch, journal_tick, snapshot_tick FROM {s}.shipped_campaigns WHERE campaign_id = $1"
        self._lock = self._head + " FOR UPDATE"
        self._insert = (
            f"INSERT INTO {s}.shipped_campaigns (campaign_id, meta, epoch, owner) VALUES ($1, $2::jsonb, 1, $3)"
        )
        self._take = (
            f"UPDATE {s}.shipped_campaigns SET epoch = epoch + 1, owner = $2, meta = $3::jsonb, updated_at = now() "
            "WHERE campaign_id = $1 RETURNING epoch"
        )
        self._segment = (
            f"INSERT INTO {s}.shipped_journal (campaign_id, first_tick, last_tick, records, data) "
            "VALUES ($1, $2, $3, $4, $5)"
        )
        self._advance = f"UPDATE {s}.shipped_campaigns SET journal_tick = $2, updated_at = now() WHERE campaign_id = $1"
        self._snapshot = (
            f"INSERT INTO {s}.shipped_snapshots (campaign_id, tick, state_hash, blob, crc) VALUES ($1, $2, $3, $4, $5) "
            "ON CONFLICT (campaign_id, tick) DO NOTHING"
        )
        self._snap_tick = (
            f"UPDATE {s}.shipped_campaigns SET snapshot_tick = GREATEST(snapshot_tick, $2), updated_at = now() "
            "WHERE campaign_id = $1"
        )
        self._kept = (
            f"SELECT min(tick), count(*) FROM (SELECT tick FROM {s}.shipped_snapshots WHERE campaign_id = $1 "
            "ORDER BY tick DESC LIMIT $2) AS kept"
        )
        self._prune_snaps = f"DELETE FROM {s}.shipped_snapshots WHERE campaign_id = $1 AND tick < $2"
        self._prune_journal = f"DELETE FROM {s}.shipped_journal WHERE campaign_id = $1 AND last_tick <= $2"
        self._read_campaign = (
            f"SELECT meta::text AS meta, epoch, journal_tick, snapshot_tick FROM {s}.shipped_campaigns "
            "WHERE campaign_id = $1"
        )
        self._read_snaps = (
            f"SELECT tick, state_hash, blob, crc FROM {s}.shipped_snapshots WHERE campaign_id = $1 ORDER BY tick DESC"
        )
        self._read_journal = (
            f"SELECT first_tick, last_tick, data FROM {s}.shipped_journal "
            "WHERE campaign_id = $1 AND last_tick > $2 AND first_tick <= $3 ORDER BY first_tick"
        )

    async def head(self, conn: asyncpg.Connection | asyncpg.Pool, campaign_id: str) -> tuple[int, int, int] | None:
        """(epoch, journal_tick, snapshot_tick) of the campaign's copy, None if there is none."""
        row = await conn.fetchrow(self._head, campaign_id)
        return None if row is None else (int(row[0]), int(row[1]), int(row[2]))

    async def claim(
        self,
        conn: asyncpg.Connection,
        campaign_id: str,
        meta: Mapping[str, str],
        owner: str,
        *,
        local_epoch: int | None,
        local_tick: int,
    ) -> Claim:
        """Take the campaign for this server (epoch + 1), or create its copy. FencedError when
        PostgreSQL's copy is newer than the local data this server would ship after it."""
        meta_json = json.dumps(dict(meta), sort_keys=True)
        async with conn.transaction():
            row = await conn.fetchrow(self._lock, campaign_id)
            if row is None:
                await conn.execute(self._insert, campaign_id, meta_json, owner)
                return Claim(1, 0, 0, True)
            epoch, journal_tick, snapshot_tick = int(row[0]), int(row[1]), int(row[2])
            if local_epoch is not None and local_epoch < epoch:
                raise FencedError(
                    f"campaign {campaign_id} moved on under epoch {epoch} (this copy is from epoch {local_epoch})"
                )
            if journal_tick > local_tick or (local_epoch is None and journal_tick > 0):
                raise FencedError(
                    f"PostgreSQL holds campaign {campaign_id} up to tick {journal_tick}; "
                    f"this server's local copy ends at tick {local_tick}"
                )
            new_epoch = int(await conn.fetchval(self._take, campaign_id, owner, meta_json))
            return Claim(new_epoch, journal_tick, snapshot_tick, False)

    async def _check(self, conn: asyncpg.Connection, campaign_id: str, epoch: int) -> tuple[int, int]:
        row = await conn.fetchrow(self._lock, campaign_id)
        if row is None:
            raise FencedError(f"campaign {campaign_id} is no longer in PostgreSQL")
        if int(row[0]) != epoch:
            raise FencedError(f"campaign {campaign_id} was taken under epoch {int(row[0])} (this server: {epoch})")
        return int(row[1]), int(row[2])

    async def write_segment(self, conn: asyncpg.Connection, campaign_id: str, epoch: int,
                            first_tick: int, last_tick: int, data: bytes) -> bool:  # fmt: skip
        """Append records first_tick..last_tick (encoded by `encode_segment`). False when they are
        already there (a retry after a commit whose outcome was unknown)."""
        async with conn.transaction():
            journal_tick, _ = await self._check(conn, campaign_id, epoch)
            if last_tick <= journal_tick:
                return False
            if first_tick != journal_tick + 1:
                raise RuntimeError(f"journal segment {first_tick}..{last_tick} does not follow tick {journal_tick}")
            await conn.execute(self._segment, campaign_id, first_tick, last_tick, last_tick - first_tick + 1, data)
            await conn.execute(self._advance, campaign_id, last_tick)
        return True

    async def write_snapshot(self, conn: asyncpg.Connection, campaign_id: str, epoch: int,
                             snap: ShippedSnapshot, keep: int = SNAPSHOTS_KEPT) -> None:  # fmt: skip
        """Store a snapshot (its journal prefix must be shipped), then prune: the `keep` newest
        snapshots stay, and the journal records after the oldest of them."""
        async with conn.transaction():
            journal_tick, _ = await self._check(conn, campaign_id, epoch)
            if snap.tick > journal_tick:
                raise RuntimeError(f"snapshot of tick {snap.tick} shipped before its journal (at {journal_tick})")
            await conn.execute(self._snapshot, campaign_id, snap.tick, snap.state_hash, snap.blob, snap.crc)
            await conn.execute(self._snap_tick, campaign_id, snap.tick)
            oldest, count = await conn.fetchrow(self._kept, campaign_id, keep)
            if oldest is not None and int(count) >= keep:
                await conn.execute(self._prune_snaps, campaign_id, int(oldest))
                await conn.execute(self._prune_journal, campaign_id, int(oldest))

    async def fetch(self, pool: asyncpg.Pool | asyncpg.Connection, campaign_id: str) -> ShippedCampaign | None:
        """The campaign's copy, ready to restore (None when PostgreSQL has none). ValueError when no
        usable snapshot and journal chain is left."""
        conn_cm = pool.acquire() if isinstance(pool, asyncpg.Pool) else _Borrowed(pool)
        async with conn_cm as conn, conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(self._read_campaign, campaign_id)
            if row is None:
                return None
            out = ShippedCampaign(campaign_id, {str(k): str(v) for k, v in json.loads(row["meta"]).items()},
                                  int(row["epoch"]), int(row["journal_tick"]), None)  # fmt: skip
            for r in await conn.fetch(self._read_snaps, campaign_id):
                snap = ShippedSnapshot(int(r["tick"]), str(r["state_hash"]), bytes(r["blob"]), int(r["crc"]))
                try:
                    snap.raw()
                except ValueError as exc:
                    out.skipped_snapshots.append(str(exc))
                    continue
                out.snapshot = snap
                break
            base = out.base_tick
            expected = base + 1
            for seg in await conn.fetch(self._read_journal, campaign_id, base, out.journal_tick):
                for tick, data, h in decode_segment(bytes(seg["data"])):
                    if tick < expected or tick > out.journal_tick:
                        continue
                    if tick != expected:
                        raise ValueError(f"shipped journal of {campaign_id} has a gap at tick {expected}")
                    out.journal.append((tick, data, h))
                    expected += 1
            if expected != out.journal_tick + 1 and out.journal_tick >= base:
                raise ValueError(
                    f"shipped journal of {campaign_id} ends at tick {expected - 1}, its head says {out.journal_tick}"
                )
        return out


class _Borrowed:
    """`async with` over a connection the caller owns (pool.acquire()'s shape)."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def __aenter__(self) -> asyncpg.Connection:
        return self._conn

    async def __aexit__(self, *exc: object) -> None:
        return None


# -- the local copy --------------------------------------------------------------------------------
def write_local(shipped: ShippedCampaign, data_dir: str | os.PathLike[str]) -> Path:
    """Rebuild `<data_dir>/<campaign>/campaign.sqlite` from the PostgreSQL copy (blocking; start-up).

    Written under a temporary name and renamed into place, so a crash half-way leaves no campaign
    that looks valid. The directory must not exist yet. Returns it.
    """
    root = Path(data_dir)
    final = root / shipped.campaign_id
    if final.exists():
        raise FileExistsError(f"{final} exists; move it aside before restoring from PostgreSQL")
    scratch = root / f".restore-{shipped.campaign_id}-{os.getpid()}"
    shutil.rmtree(scratch, ignore_errors=True)
    store = CampaignStore.open(scratch, shipped.campaign_id)
    try:
        store.set_meta({**shipped.meta, META_EPOCH: str(shipped.epoch)})
        if shipped.snapshot is not None:
            snap = shipped.snapshot
            store.put_snapshot(snap.tick, snap.state_hash, snap.raw())
        for tick, data, h in shipped.journal:
            while not store.append_journal(tick, data, h):
                store.flush(10.0)  # the queue is bounded: let the writer catch up
        if not store.flush(60.0):
            raise OSError(f"restoring {shipped.campaign_id}: the local store did not flush")
    finally:
        store.close(10.0)
    os.replace(scratch / shipped.campaign_id, final)
    shutil.rmtree(scratch, ignore_errors=True)
    return final


def local_state(data_dir: str | os.PathLike[str], campaign_id: str) -> tuple[int, int | None] | None:
    """(newest tick it holds, epoch it was shipped under or None) of a local campaign; None without one."""
    path = Path(data_dir) / campaign_id / DB_FILENAME
    if not path.is_file():
        return None
    reader = StoreReader(path)
    try:
        meta = reader.meta()
        if not meta:
            return None
        epoch = meta.get(META_EPOCH)
        return reader.held_tick(), (int(epoch) if epoch else None)
    finally:
        reader.close()
