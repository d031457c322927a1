"""Relocation through PostgreSQL: ship a campaign's journal and snapshots there, restore from there.

Shipping (`Shipper`, one per campaign) follows the campaign's SQLite file rather than the tick: the
tick already hands every journal record to the store's writer thread, and once committed there the
record is read back by a worker thread, grouped into a compressed segment and written to PostgreSQL
by an asyncio task. Nothing on the tick changes, memory holds one segment at most, and the local
file is the buffer: during a PostgreSQL outage records simply wait on disk (however long it lasts,
across a crash of this server too) and are shipped in order when PostgreSQL is back.

- Default (`ack="disk"`): ship every `interval` seconds (1 s). A machine lost with its disk loses at
  most the records of the last interval plus one PostgreSQL write (the RPO, docs/relocation.md).
- `ack="pg"`: ship as soon as SQLite commits (group commit: records that arrive during a write go
  in the next one), and acknowledge an input to its player only once PostgreSQL has its tick
  (`Journal.gate_on_remote`). What a player saw acknowledged survives the loss of the machine.

Restoring (`restore_from_pg`, awaited before the server opens its data dir): a campaign with no
local data, or with local data older than PostgreSQL's copy, is rebuilt from PostgreSQL into a
local store and then recovered as after a crash (engine/recovery.py), replaying and verifying
the shipped journal. See docs/relocation.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TypeVar

import asyncpg

from engine.journal import Journal
from persistence.campaign_reader import StoreReader
from persistence.pg_pool import LazyPool
from persistence.pg_ship import (
    META_EPOCH,
    Claim,
    FencedError,
    ShippedSnapshot,
    ShipStore,
    encode_segment,
    local_state,
    write_local,
)

log = logging.getLogger("arbiter.relocation")

AckAfter = Literal["disk", "pg"]
T = TypeVar("T")


@dataclass(slots=True)
class ShipConfig:
    """How a campaign is shipped to PostgreSQL (`arbiter serve --ship-every ... --ack-after ...`)."""

    interval_s: float = 1.0  # ship the journal this often (ack="pg": continuously); 0 = shipping off
    snapshot_every_s: float = 30.0  # ship the newest local snapshot this often (and at drain)
    ack: AckAfter = "disk"  # "pg": acknowledge inputs only once PostgreSQL has them
    max_segment: int = 1800  # journal records per segment (30 s at 60 Hz) when catching up
    restore_timeout_s: float = 15.0  # how long start-up waits for PostgreSQL when it must restore
    schema: str = "public"

    @property
    def enabled(self) -> bool:
        return self.interval_s > 0 or self.ack == "pg"


def server_identity() -> str:
    """Who ships: host, pid and a random suffix (a restarted pid is another owner)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


# -- restoring -------------------------------------------------------------------------------------
class RestoreError(RuntimeError):
    """The campaign cannot be opened safely: no local data and PostgreSQL cannot say whether it has it."""


@dataclass(slots=True)
class RestoreReport:
    restored: bool  # a local copy was (re)built from PostgreSQL
    reason: str
    base_tick: int = 0
    journal_ticks: int = 0
    seconds: float = 0.0
    moved_aside: str = ""  # where stale local data went


async def restore_from_pg(
    dsn: str, data_dir: str, campaign_id: str, cfg: ShipConfig | None = None, *, pool: LazyPool | None = None
) -> RestoreReport:
    """Make sure `<data_dir>/<campaign_id>` holds the newest copy of the campaign before it opens.

    Restores from PostgreSQL when there is no local copy, or when PostgreSQL's copy is newer (another
    server ran the campaign after this one, or the local disk lost its tail). Local data that loses
    is renamed aside, never deleted. Raises RestoreError when there is no local copy and PostgreSQL
    cannot be asked within `restore_timeout_s` (starting empty would fork the campaign's history).
    `pool`: the process's pool (a host's, engine/shared.py); by default a small one of its own.
    """
    cfg = cfg or ShipConfig()
    t0 = time.perf_counter()
    local = await asyncio.to_thread(local_state, data_dir, campaign_id)
    store = ShipStore(cfg.schema)
    own = pool is None
    if pool is None:
        pool = LazyPool(dsn, None, cfg.schema, max_size=2, connect_timeout=5.0, application_name="arbiter-restore")
    try:
        deadline = time.monotonic() + cfg.restore_timeout_s
        delay = 0.2
        while True:
            try:
                conn_pool = await pool.get()
                head = await store.head(conn_pool, campaign_id)
                break
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                if local is not None:
                    log.warning("PostgreSQL unreachable (%s): campaign %s starts from its local data", exc, campaign_id)
                    return RestoreReport(False, f"PostgreSQL unreachable: {exc}")
                if time.monotonic() >= deadline:
                    raise RestoreError(
                        f"campaign {campaign_id} has no local data and PostgreSQL cannot be reached to restore it "
                        f"({exc}); start PostgreSQL, or use another --campaign"
                    ) from exc
                await asyncio.sleep(delay)
                delay = min(delay * 2, 2.0)
        if head is None:
            return RestoreReport(False, "not in PostgreSQL")
        epoch, journal_tick, _ = head
        if local is not None:
            local_tick, local_epoch = local
            newer = (local_epoch is not None and local_epoch < epoch) or journal_tick > local_tick
            if not newer:
                return RestoreReport(False, "local copy is current")
        try:
            shipped = await store.fetch(conn_pool, campaign_id)
        except ValueError as exc:
            raise RestoreError(f"PostgreSQL's copy of campaign {campaign_id} cannot be restored: {exc}") from exc
        if shipped is None:
            return RestoreReport(False, "not in PostgreSQL")
        for why in shipped.skipped_snapshots:
            log.warning("shipped snapshot not usable: %s", why)
    finally:
        if own:
            await pool.close()
    moved = ""
    if local is not None:
        src = Path(data_dir) / campaign_id
        moved = str(src.with_name(f"{campaign_id}.stale-{int(time.time())}"))
        os.replace(src, moved)
        log.warning("local copy of %s (tick %d) is older than PostgreSQL's (tick %d, epoch %d): moved to %s",
                    campaign_id, local[0], shipped.journal_tick, shipped.epoch, moved)  # fmt: skip
    await asyncio.to_thread(write_local, shipped, data_dir)
    report = RestoreReport(True, "restored from PostgreSQL", shipped.base_tick, len(shipped.journal),
                           time.perf_counter() - t0, moved)  # fmt: skip
    log.info("campaign %s restored from PostgreSQL: snapshot at tick %d + %d journal ticks (epoch %d) in %.2f s",
             campaign_id, report.base_tick, report.journal_ticks, shipped.epoch, report.seconds)  # fmt: skip
    return report


# -- shipping --------------------------------------------------------------------------------------
class Shipper:
    """Ships one campaign's committed journal and its snapshots to PostgreSQL, off the tick.

    Counters for /stats and /metrics: `shipped_tick`, `segments`, `records`, `bytes_raw`,
    `bytes_shipped`, `snapshots_shipped`, `failures`, `last_ship_ms`, `last_error`, `connected`,
    `fenced`; `lag_ticks` (committed locally, not yet in PostgreSQL).
    """

    def __init__(self, dsn: str, campaign_id: str, journal: Journal, cfg: ShipConfig, *,
                 owner: str | None = None, pool: LazyPool | None = None) -> None:  # fmt: skip
        """`pool`: a pool shared with other campaigns of the process (left open by `close`); by
        default the shipper makes its own (at most 2 connections)."""
        self.cfg = cfg
        self.campaign_id = campaign_id
        self.journal = journal
        self.owner = owner or server_identity()
        self._store = ShipStore(cfg.schema)
        self._own_pool = pool is None
        self._pool = pool or LazyPool(dsn, None, cfg.schema, max_size=2, connect_timeout=5.0,
                                      application_name="arbiter-ship")  # fmt: skip
        self._path = journal.store.path
        self._reader: StoreReader | None = None
        self._task: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()
        self._stopping = False
        self._rng = random.Random()
        self.claim: Claim | None = None
        self.shipped_tick = -1  # -1: not claimed yet
        self.snapshot_tick = -1
        self._snapshot_shipped_at = 0.0
        self.segments = 0
        self.records = 0
        self.bytes_raw = 0
        self.bytes_shipped = 0
        self.snapshots_shipped = 0
        self.failures = 0
        self.last_ship_ms = 0.0
        self.last_error: str | None = None
        self.connected = False
        self.fenced = False
        if cfg.ack == "pg":
            journal.gate_on_remote()
            journal.on_local_commit = self._on_local_commit

    # -- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the shipping task (returns at once; PostgreSQL may be down: records wait on disk)."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name=f"ship:{self.campaign_id}")

    def _on_local_commit(self, tick: int) -> None:
        self._wake.set()

    @property
    def lag_ticks(self) -> int:
        committed = self.journal.store.committed_tick
        return max(0, committed - max(self.shipped_tick, 0))

    async def drain(self, timeout: float) -> bool:
        """Ship every committed record and the newest snapshot (the store is flushed or closed), then
        stop. True when PostgreSQL has everything the local file has."""
        self._stopping = True
        self._wake.set()
        task = self._task
        ok = False
        if task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(task), timeout)
                ok = not self.fenced and self.shipped_tick >= self._local_last()
            except TimeoutError:
                log.error("campaign %s: PostgreSQL did not take the final journal within %.1f s (shipped to tick %d)",
                          self.campaign_id, timeout, self.shipped_tick)  # fmt: skip
        await self.close()
        return ok

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._own_pool:
            await self._pool.close()
        if self._reader is not None:
            self._reader.close()
            self._reader = None

    def _local_last(self) -> int:
        return self.journal.store.committed_tick

    # -- the task ----------------------------------------------------------------------------------
    async def _run(self) -> None:
        try:
            if not await self._claim():
                return
            loop = asyncio.get_running_loop()
            next_at = loop.time()
            continuous = self.cfg.ack == "pg"
            while True:
                if not self._stopping:
                    if continuous:
                        self._wake.clear()
                        if self.shipped_tick >= self._local_last():
                            await self._wake.wait()
                    else:
                        delay = next_at - loop.time()
                        if delay > 0:
                            self._wake.clear()
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(self._wake.wait(), delay)
                        next_at = loop.time() + self.cfg.interval_s
                final = self._stopping
                if not await self._ship_journal(until_caught_up=final):
                    return
                await self._maybe_ship_snapshot(force=final)
                if final and self.shipped_tick >= self._local_last():
                    return
        except FencedError as exc:
            self._fence(exc)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("campaign %s: shipping to PostgreSQL stopped", self.campaign_id)

    def _fence(self, exc: FencedError) -> None:
        self.fenced = True
        self.last_error = str(exc)
        log.error("campaign %s is not shipped to PostgreSQL any more: %s", self.campaign_id, exc)

    async def _retrying(self, what: str, op: Callable[[], Awaitable[T]]) -> T:
        """Run `op()` until it succeeds, with capped, jittered backoff; FencedError and cancellation pass."""
        attempt = 0
        outage: float | None = None
        while True:
            try:
                result = await op()
            except (FencedError, asyncio.CancelledError):
                raise
            except Exception as exc:
                self.failures += 1
                self.connected = False
                self.last_error = f"{what}: {type(exc).__name__}: {exc}"
                if outage is None:
                    outage = time.monotonic()
                    log.warning("campaign %s: %s failed (%s); retrying", self.campaign_id, what, self.last_error)
                delay = min(5.0, 0.05 * 2 ** min(attempt, 10)) * (0.5 + 0.5 * self._rng.random())
                attempt += 1
                await asyncio.sleep(delay)
                continue
            if outage is not None:
                log.warning("campaign %s: %s resumed after %.1f s", self.campaign_id, what, time.monotonic() - outage)
            self.connected = True
            return result

    async def _claim(self) -> bool:
        self._reader = await asyncio.to_thread(StoreReader, self._path)
        reader = self._reader

        async def claim() -> Claim:
            meta = await asyncio.to_thread(reader.meta)
            local_tick = await asyncio.to_thread(reader.held_tick)  # a fresh restore: its snapshot
            epoch_text = meta.pop(META_EPOCH, None)
            pool = await self._pool.get()
            async with pool.acquire() as conn:
                return await self._store.claim(conn, self.campaign_id, meta, self.owner,
                                               local_epoch=int(epoch_text) if epoch_text else None,
                                               local_tick=local_tick)  # fmt: skip

        try:
            got = await self._retrying("claim", claim)
        except FencedError as exc:
            self._fence(exc)
            return False
        self.claim = got
        # The local file says which epoch it was shipped under: a later start compares it with PG's.
        await asyncio.to_thread(self.journal.store.set_meta, {META_EPOCH: str(got.epoch)})
        self.shipped_tick = got.journal_tick
        self.snapshot_tick = got.snapshot_tick
        self._report_remote()
        log.info("campaign %s shipped to PostgreSQL under epoch %d (%s; PostgreSQL has it to tick %d)",
                 self.campaign_id, got.epoch, "new" if got.created else "taken over", got.journal_tick)  # fmt: skip
        return True

    def _report_remote(self) -> None:
        if self.cfg.ack == "pg":
            self.journal.on_remote_commit(self.shipped_tick)

    async def _ship_journal(self, *, until_caught_up: bool) -> bool:
        """Ship committed records in segments; False when fenced."""
        assert self._reader is not None and self.claim is not None
        reader, claim = self._reader, self.claim
        while True:
            rows = await asyncio.to_thread(reader.journal_rows, self.shipped_tick, self.cfg.max_segment)
            if not rows:
                return True
            first, last = rows[0][0], rows[-1][0]
            data = await asyncio.to_thread(encode_segment, rows)

            async def write(first: int = first, last: int = last, data: bytes = data) -> bool:
                pool = await self._pool.get()
                t0 = time.perf_counter()
                async with pool.acquire() as conn:
                    done = await self._store.write_segment(conn, self.campaign_id, claim.epoch, first, last, data)
                self.last_ship_ms = (time.perf_counter() - t0) * 1000.0
                return done

            try:
                await self._retrying("journal shipping", write)
            except FencedError as exc:
                self._fence(exc)
                return False
            self.segments += 1
            self.records += len(rows)
            self.bytes_raw += sum(len(r[1]) for r in rows)
            self.bytes_shipped += len(data)
            self.shipped_tick = last
            self._report_remote()
            if len(rows) < self.cfg.max_segment and not until_caught_up:
                return True

    async def _maybe_ship_snapshot(self, *, force: bool) -> None:
        assert self._reader is not None and self.claim is not None
        now = time.monotonic()
        if not force and now - self._snapshot_shipped_at < self.cfg.snapshot_every_s:
            return
        reader, claim = self._reader, self.claim
        raw = await asyncio.to_thread(reader.snapshot_raw, self.snapshot_tick, self.shipped_tick)
        self._snapshot_shipped_at = now
        if raw is None:
            return
        snap = ShippedSnapshot(*raw)

        async def write() -> None:
            pool = await self._pool.get()
            async with pool.acquire() as conn:
                await self._store.write_snapshot(conn, self.campaign_id, claim.epoch, snap)

        try:
            await self._retrying("snapshot shipping", write)
        except FencedError as exc:
            self._fence(exc)
            return
        self.snapshot_tick = snap.tick
        self.snapshots_shipped += 1
        self.bytes_shipped += len(snap.blob)

    # -- figures -----------------------------------------------------------------------------------
    def stats(self) -> dict[str, object]:
        return {
            "epoch": self.claim.epoch if self.claim is not None else 0,
            "shipped_tick": self.shipped_tick,
            "snapshot_tick": self.snapshot_tick,
            "lag_ticks": self.lag_ticks,
            "segments": self.segments,
            "records": self.records,
            "bytes_raw": self.bytes_raw,
            "bytes_shipped": self.bytes_shipped,
            "snapshots_shipped": self.snapshots_shipped,
            "failures": self.failures,
            "last_ship_ms": round(self.last_ship_ms, 3),
            "connected": self.connected,
            "fenced": self.fenced,
            "last_error": self.last_error,
            "ack": self.cfg.ack,
        }
